# bitdust %postun: tells systemd the units are gone. RPM has no purge: the
# daemons' state under /var/lib/bitdust (keys, stored fragments) and the user
# bitdust are kept on erase, as Fedora packages do; remove them by hand.
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
fi
