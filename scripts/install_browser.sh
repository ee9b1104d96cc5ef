#!/usr/bin/env bash
# The browser of the page tests (tests/test_web_page.py): Debian's chromium and its
# chromedriver (same version, from the same archive). Run by .ci/run before `make test`;
# does nothing when /usr/bin/chromium and /usr/bin/chromedriver are already there.
#
#   bash scripts/install_browser.sh        (as root, or with sudo available)
#
# CI fails when this fails: the browser tests do not skip there (CI=true).
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install_browser.sh: no apt-get here; install chromium and chromedriver yourself" >&2
    exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq chromium chromium-driver >/dev/null
/usr/bin/chromium --version
/usr/bin/chromedriver --version
