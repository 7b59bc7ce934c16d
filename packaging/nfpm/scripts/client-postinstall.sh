#!/bin/sh
# mirage (desktop app + helper): after install or upgrade.
set -e
# Members of group mirage may use the helper's API (the tray app).
getent group mirage >/dev/null 2>&1 || groupadd --system mirage
for u in "${SUDO_USER:-}" "$(getent passwd "${PKEXEC_UID:-x}" | cut -d: -f1)"; do
	[ -n "$u" ] && [ "$u" != root ] && usermod -a -G mirage "$u" 2>/dev/null || true
done
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
	systemctl enable mirage-helper.service >/dev/null 2>&1 || true
	systemctl restart mirage-helper.service >/dev/null 2>&1 || true
fi
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q /usr/share/applications || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q /usr/share/icons/hicolor || true
exit 0
