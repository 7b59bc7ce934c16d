#!/bin/sh
# mirage: before removal (not on upgrade). The helper disconnects and
# restores routes and DNS when stopped; profiles in /var/lib/mirage-helper stay.
set -e
case "$1" in upgrade|1) exit 0 ;; esac
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl disable --now mirage-helper.service >/dev/null 2>&1 || true
elif [ -x /usr/bin/mirage-helper ]; then
	/usr/bin/mirage-helper cleanup >/dev/null 2>&1 || true
fi
exit 0
