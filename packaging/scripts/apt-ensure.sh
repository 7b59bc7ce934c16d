#!/bin/sh
# apt-ensure.sh PKG...: install the Debian packages that are missing.
# Runs apt-get update only when something has to be installed.
set -e
missing=""
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "missing Debian packages:$missing (run as root, or install them: apt-get install$missing)" >&2
	exit 0
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
# PKG:ARCH names a foreign architecture (cross-building): enable it first.
for p in $missing; do
	case "$p" in *:*)
		a=${p#*:}
		dpkg --print-foreign-architectures | grep -qx "$a" || dpkg --add-architecture "$a" ;;
	esac
done
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
