# bitdust %preun: on erase ($1 = 0; not on upgrade) stops and disables the units.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now bitdust-backup.timer bitdust-rebuilder.service \
        bitdust-customer.service bitdust-supplier.service bitdust-dht.service \
        bitdust.target >/dev/null 2>&1 || :
fi
