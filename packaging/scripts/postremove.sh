#!/bin/sh
# After remove (deb: postrm remove|purge|upgrade|...; rpm: %postun). Lets
# systemd forget the removed unit; on purge also removes what dpkg left
# beside the conffile (.dpkg-old/.dpkg-dist copies) and the directory if empty.
set -e

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi

if [ "$1" = purge ]; then
	rm -f /etc/smarter-device-manager/rules.toml.dpkg-old \
		/etc/smarter-device-manager/rules.toml.dpkg-dist \
		/etc/smarter-device-manager/rules.toml.dpkg-new
	rmdir /etc/smarter-device-manager 2>/dev/null || true
fi
exit 0
