"""``python -m gallery``: tools that use the search server through its API.

They are clients of the served API (``reid_client``) and never open the gallery store
(``reid.gallery``), which the server owns: ``evaluate`` computes CMC / mAP through the
API and compares them with the offline numbers of the same export.
"""
