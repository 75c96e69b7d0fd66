# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_bitdustctl_global_optspecs
    string join \n json q/quiet run-dir= h/help V/version
end

function __fish_bitdustctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_bitdustctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_bitdustctl_using_subcommand
    set -l cmd (__fish_bitdustctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -s V -l version -d 'Print version'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "status" -d 'This customer\'s node id, suppliers and backups'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "backup" -d 'Back PATH... up to the suppliers (a new version of the backup of the same paths by the same user); bitdustctl reads the files, as the user running it'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "list" -d 'List the backups and their versions (root and the user bitdust see every backup; other users their own)'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "restore" -d 'Restore a backup version into a new or empty directory; bitdustctl creates the files, as the user running it, and writes them or has the customer-agent write the content of the large ones into them'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "ls" -d 'List the entries of a snapshot, or those under PATH (the agent needs master.key). With --json, one JSON object per line'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "diff" -d 'What changed from snapshot A to snapshot B of one backup: "+" added, "-" removed, "M" modified (content, mode, mtime, kind or target). With --json, one JSON object per line'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "forget" -d 'Forget snapshots by policy (restic\'s --keep-* flags) or one ID@VERSION: their roots are deleted, then the packs no snapshot left references, at every supplier (one that is away later)'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "prune" -d 'Delete at every supplier the packs no snapshot references (those a supplier that was away still holds: backups, delete and forget prune as they go) and fragments of packs nothing knows, after repacking mostly-unused packs. Exits 4 when something is left for the next prune (a supplier away, or a backup running now)'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "check" -d 'Check a snapshot backup: every root, every fragment of every pack (headers, signatures, hashes) at the suppliers, and every snapshot\'s entries against the index; --read-data-subset also decrypts packs and checks every chunk in them'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "stats" -d 'Sizes of a snapshot backup: logical (all snapshots), unique, compressed, packed (before the erasure code) and stored (after it), and the deduplication ratio'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "delete" -d 'Delete a version (ID@VERSION) or every version (ID) from the suppliers'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "suppliers" -d 'List the suppliers, or hire or fire one'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "local" -d 'Offline backups to N local directories, one per would-be supplier'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "rebuild" -d 'The rebuilder: its view of the suppliers and its queue'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "key" -d 'Export this customer\'s keys, or import them on a new machine'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "start-afresh" -d 'Give up recovering the backups of imported keys and start as a new customer under the same key: the backups made before are no longer reachable from this agent, and the supplier list it publishes replaces the old one. Without --yes, says so and does nothing'
complete -c bitdustctl -n "__fish_bitdustctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand status" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand status" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand status" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand backup" -l config -d 'The configuration file whose customer.backup_paths are backed up when no PATH is given' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand backup" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand backup" -l full-copy -d 'Store a full copy (the format before deduplicated snapshots; it will go) instead of a snapshot, which reads only the files the agent\'s files cache does not vouch for and sends only new chunks'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand backup" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand backup" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand backup" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand list" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand list" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand list" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand list" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand restore" -l to -d 'New or empty directory to restore into' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand restore" -l include -d 'Snapshots: restore only this path (as backed up, absolute) and what is under it; repeatable. Only the packs holding it are fetched' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand restore" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand restore" -l numeric-owner -d 'Run as root: give owners back by their numeric ids, not by the user and group names the snapshot keeps'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand restore" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand restore" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand restore" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand ls" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand ls" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand ls" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand ls" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand diff" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand diff" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand diff" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand diff" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand forget" -l keep-last -d 'Keep the N newest snapshots' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand forget" -l keep-hourly -d 'Keep the newest snapshot of each of the N newest hours that have one' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand forget" -l keep-daily -d 'Keep the newest snapshot of each of the N newest days (UTC) that have one' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand forget" -l keep-weekly -d 'Keep the newest snapshot of each of the N newest ISO weeks that have one' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand forget" -l keep-monthly -d 'Keep the newest snapshot of each of the N newest months that have one' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand forget" -l keep-yearly -d 'Keep the newest snapshot of each of the N newest years that have one' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand forget" -l keep-within -d 'Keep every snapshot taken within SPAN of the newest (1y2m3d4h form)' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand forget" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand forget" -l dry-run -d 'Say what would be forgotten, and change nothing'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand forget" -l prune -d 'Accepted as restic takes it: over the network forget always deletes the packs no snapshot left references'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand forget" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand forget" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand forget" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand prune" -l max-unused -d 'Repack the most unused packs until at most this share of the referenced data is unused: their live chunks move into new packs at every supplier (needs master.key at the agent and every supplier answering; 100%: whole packs only)' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand prune" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand prune" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand prune" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand prune" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand check" -l read-data-subset -d 'Read back and verify this share of the packs (10%, chosen at random) or this part of them (1/7 … 7/7 on successive runs)' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand check" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand check" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand check" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand check" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand stats" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand stats" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand stats" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand stats" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand delete" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand delete" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand delete" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand delete" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and not __fish_seen_subcommand_from hire fire help" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and not __fish_seen_subcommand_from hire fire help" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and not __fish_seen_subcommand_from hire fire help" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and not __fish_seen_subcommand_from hire fire help" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and not __fish_seen_subcommand_from hire fire help" -f -a "hire" -d 'Hire the supplier at ADDR (host:port, or NODEID@host:port to pin its key) for the first free position, or --position. Without ADDR, hire suppliers found in the DHT: for --position, or for every free position'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and not __fish_seen_subcommand_from hire fire help" -f -a "fire" -d 'Fire the supplier at POSITION: it deletes our fragments, the position becomes free'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and not __fish_seen_subcommand_from hire fire help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and __fish_seen_subcommand_from hire" -l position -d 'Position to bind (0-based)' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and __fish_seen_subcommand_from hire" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and __fish_seen_subcommand_from hire" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and __fish_seen_subcommand_from hire" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and __fish_seen_subcommand_from hire" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and __fish_seen_subcommand_from fire" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and __fish_seen_subcommand_from fire" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and __fish_seen_subcommand_from fire" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and __fish_seen_subcommand_from fire" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and __fish_seen_subcommand_from help" -f -a "hire" -d 'Hire the supplier at ADDR (host:port, or NODEID@host:port to pin its key) for the first free position, or --position. Without ADDR, hire suppliers found in the DHT: for --position, or for every free position'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and __fish_seen_subcommand_from help" -f -a "fire" -d 'Fire the supplier at POSITION: it deletes our fragments, the position becomes free'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand suppliers; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and not __fish_seen_subcommand_from backup restore verify list ls diff forget prune check stats help" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and not __fish_seen_subcommand_from backup restore verify list ls diff forget prune check stats help" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and not __fish_seen_subcommand_from backup restore verify list ls diff forget prune check stats help" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and not __fish_seen_subcommand_from backup restore verify list ls diff forget prune check stats help" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and not __fish_seen_subcommand_from backup restore verify list ls diff forget prune check stats help" -f -a "backup" -d 'Back PATH... up into DIR/<position>/ for positions 0..N-1: a deduplicated snapshot (only new content is stored; DIR/state keeps the index and the files cache)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and not __fish_seen_subcommand_from backup restore verify list ls diff forget prune check stats help" -f -a "restore" -d 'Restore a backup from whatever positions of DIR are present'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and not __fish_seen_subcommand_from backup restore verify list ls diff forget prune check stats help" -f -a "verify" -d 'Check every fragment and report per pack how many more positions may be lost'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and not __fish_seen_subcommand_from backup restore verify list ls diff forget prune check stats help" -f -a "list" -d 'List the snapshots in DIR: ID@VERSION, time, size, what each added, and its paths (those need master.key)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and not __fish_seen_subcommand_from backup restore verify list ls diff forget prune check stats help" -f -a "ls" -d 'List the entries of a snapshot, or those under PATH (needs master.key). With --json, one JSON object per line'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and not __fish_seen_subcommand_from backup restore verify list ls diff forget prune check stats help" -f -a "diff" -d 'What changed from snapshot A to snapshot B: "+" added, "-" removed, "M" modified (content, mode, mtime, kind or target); needs master.key. With --json, one JSON object per line'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and not __fish_seen_subcommand_from backup restore verify list ls diff forget prune check stats help" -f -a "forget" -d 'Forget snapshots by policy (restic\'s --keep-* flags) or one ID@VERSION: their roots are removed; their data stays until a prune (--prune runs one right after)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and not __fish_seen_subcommand_from backup restore verify list ls diff forget prune check stats help" -f -a "prune" -d 'Delete the packs no remaining snapshot references, at every position (a position directory that is missing now is done by a later prune). Safe to interrupt; needs no master.key'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and not __fish_seen_subcommand_from backup restore verify list ls diff forget prune check stats help" -f -a "check" -d 'Check a backup: every root, every fragment of every pack (headers, signatures, hashes), and with master.key every snapshot\'s entries against the index; --read-data-subset also decrypts packs and checks every chunk in them'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and not __fish_seen_subcommand_from backup restore verify list ls diff forget prune check stats help" -f -a "stats" -d 'Sizes of a backup: logical (all snapshots), unique, compressed, packed (before the erasure code) and stored (after it), and the deduplication ratio. Needs no master.key'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and not __fish_seen_subcommand_from backup restore verify list ls diff forget prune check stats help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from backup" -l to -d 'Directory that receives one subdirectory per position' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from backup" -l suppliers -d 'Number of suppliers (positions): 2, 4, 7, 13, 18, 26 or 64 [default: the backup\'s own, 7 for a new one]. Every snapshot of a backup keeps its first code' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from backup" -l scheme -d 'Erasure-coding scheme: xor (ECC maps, cheap repair) or rs (Reed-Solomon, any half restores) [default: the backup\'s own, xor for a new one]' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from backup" -l zstd-level -d 'zstd compression level (-7..=22)' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from backup" -l block-size -d 'Pack size: new chunks are packed into blocks of about this size, e.g. 4M, 512K' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from backup" -l workers -d 'Threads compressing new chunks [default: one per core]' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from backup" -l keys -d 'Key directory [default: $BITDUST_KEYS, else $XDG_DATA_HOME/bitdust/keys, else ~/.local/share/bitdust/keys]. Created on first backup' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from backup" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from backup" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from backup" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from backup" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from restore" -l to -d 'New or empty directory to restore into' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from restore" -l include -d 'Restore only this path (as backed up, absolute) and what is under it; repeatable. Only the packs holding it are read' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from restore" -l workers -d 'Threads decompressing chunks of 64 KiB and more (at most 8; 1 leaves it to the thread writing the files), and as many opening packs (at most 4) [default: one per core]' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from restore" -l keys -d 'Key directory [default: $BITDUST_KEYS, else $XDG_DATA_HOME/bitdust/keys, else ~/.local/share/bitdust/keys]. Created on first backup' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from restore" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from restore" -l numeric-owner -d 'Run as root: give owners back by their numeric ids, not by the user and group names the snapshot keeps'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from restore" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from restore" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from restore" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from verify" -l keys -d 'Key directory [default: $BITDUST_KEYS, else $XDG_DATA_HOME/bitdust/keys, else ~/.local/share/bitdust/keys]. Created on first backup' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from verify" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from verify" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from verify" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from list" -l keys -d 'Key directory [default: $BITDUST_KEYS, else $XDG_DATA_HOME/bitdust/keys, else ~/.local/share/bitdust/keys]. Created on first backup' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from list" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from list" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from ls" -l keys -d 'Key directory [default: $BITDUST_KEYS, else $XDG_DATA_HOME/bitdust/keys, else ~/.local/share/bitdust/keys]. Created on first backup' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from ls" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from ls" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from ls" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from diff" -l keys -d 'Key directory [default: $BITDUST_KEYS, else $XDG_DATA_HOME/bitdust/keys, else ~/.local/share/bitdust/keys]. Created on first backup' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from diff" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from diff" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from diff" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from diff" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from forget" -l keep-last -d 'Keep the N newest snapshots' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from forget" -l keep-hourly -d 'Keep the newest snapshot of each of the N newest hours that have one' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from forget" -l keep-daily -d 'Keep the newest snapshot of each of the N newest days (UTC) that have one' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from forget" -l keep-weekly -d 'Keep the newest snapshot of each of the N newest ISO weeks that have one' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from forget" -l keep-monthly -d 'Keep the newest snapshot of each of the N newest months that have one' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from forget" -l keep-yearly -d 'Keep the newest snapshot of each of the N newest years that have one' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from forget" -l keep-within -d 'Keep every snapshot taken within SPAN of the newest (1y2m3d4h form)' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from forget" -l grace -d 'With --prune: see `prune --grace`' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from forget" -l max-unused -d 'With --prune: see `prune --max-unused`' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from forget" -l keys -d 'Key directory [default: $BITDUST_KEYS, else $XDG_DATA_HOME/bitdust/keys, else ~/.local/share/bitdust/keys]. Created on first backup' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from forget" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from forget" -l dry-run -d 'Say what would be forgotten, and change nothing'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from forget" -l prune -d 'Prune right after forgetting'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from forget" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from forget" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from forget" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from prune" -l grace -d 'Keep unreferenced packs younger than this span (1y2m3d4h form; 0h: none): a failed backup\'s packs, which the next run reuses' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from prune" -l max-unused -d 'Repack the most unused packs until at most this share of the referenced data is unused (needs master.key; without it, or with 100%, only whole packs are deleted)' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from prune" -l keys -d 'Key directory [default: $BITDUST_KEYS, else $XDG_DATA_HOME/bitdust/keys, else ~/.local/share/bitdust/keys]. Created on first backup' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from prune" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from prune" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from prune" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from prune" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from check" -l read-data-subset -d 'Read back and verify this share of the packs (10%, chosen at random) or this part of them (1/7 … 7/7 on successive runs)' -r
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from check" -l keys -d 'Key directory [default: $BITDUST_KEYS, else $XDG_DATA_HOME/bitdust/keys, else ~/.local/share/bitdust/keys]. Created on first backup' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from check" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from check" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from check" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from stats" -l keys -d 'Key directory [default: $BITDUST_KEYS, else $XDG_DATA_HOME/bitdust/keys, else ~/.local/share/bitdust/keys]. Created on first backup' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from stats" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from stats" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from stats" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from stats" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "backup" -d 'Back PATH... up into DIR/<position>/ for positions 0..N-1: a deduplicated snapshot (only new content is stored; DIR/state keeps the index and the files cache)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "restore" -d 'Restore a backup from whatever positions of DIR are present'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Check every fragment and report per pack how many more positions may be lost'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the snapshots in DIR: ID@VERSION, time, size, what each added, and its paths (those need master.key)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "ls" -d 'List the entries of a snapshot, or those under PATH (needs master.key). With --json, one JSON object per line'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "diff" -d 'What changed from snapshot A to snapshot B: "+" added, "-" removed, "M" modified (content, mode, mtime, kind or target); needs master.key. With --json, one JSON object per line'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "forget" -d 'Forget snapshots by policy (restic\'s --keep-* flags) or one ID@VERSION: their roots are removed; their data stays until a prune (--prune runs one right after)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "prune" -d 'Delete the packs no remaining snapshot references, at every position (a position directory that is missing now is done by a later prune). Safe to interrupt; needs no master.key'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "check" -d 'Check a backup: every root, every fragment of every pack (headers, signatures, hashes), and with master.key every snapshot\'s entries against the index; --read-data-subset also decrypts packs and checks every chunk in them'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "stats" -d 'Sizes of a backup: logical (all snapshots), unique, compressed, packed (before the erasure code) and stored (after it), and the deduplication ratio. Needs no master.key'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand rebuild; and not __fish_seen_subcommand_from status help" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand rebuild; and not __fish_seen_subcommand_from status help" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand rebuild; and not __fish_seen_subcommand_from status help" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand rebuild; and not __fish_seen_subcommand_from status help" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand rebuild; and not __fish_seen_subcommand_from status help" -f -a "status" -d 'The rebuilder\'s view of the suppliers, its counters and its queue'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand rebuild; and not __fish_seen_subcommand_from status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand rebuild; and __fish_seen_subcommand_from status" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand rebuild; and __fish_seen_subcommand_from status" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand rebuild; and __fish_seen_subcommand_from status" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand rebuild; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand rebuild; and __fish_seen_subcommand_from help" -f -a "status" -d 'The rebuilder\'s view of the suppliers, its counters and its queue'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand rebuild; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and not __fish_seen_subcommand_from export import help" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and not __fish_seen_subcommand_from export import help" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and not __fish_seen_subcommand_from export import help" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and not __fish_seen_subcommand_from export import help" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and not __fish_seen_subcommand_from export import help" -f -a "export" -d 'Write the customer\'s identity and master key to FILE (created 0600; it must not exist). With it alone a new machine finds the suppliers and restores everything: keep it offline and safe'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and not __fish_seen_subcommand_from export import help" -f -a "import" -d 'Put the keys from FILE (written by `key export`) into the customer\'s key directory; then start the customer-agent, which finds its supplier list in the DHT and its catalog on the suppliers'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and not __fish_seen_subcommand_from export import help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and __fish_seen_subcommand_from export" -l keys -d 'The customer-agent\'s key directory [default: customer.keys_dir of the config file]' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and __fish_seen_subcommand_from export" -l config -d 'The configuration file whose key directory is meant' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and __fish_seen_subcommand_from export" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and __fish_seen_subcommand_from export" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and __fish_seen_subcommand_from export" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and __fish_seen_subcommand_from import" -l keys -d 'The customer-agent\'s key directory [default: customer.keys_dir of the config file]' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and __fish_seen_subcommand_from import" -l config -d 'The configuration file whose key directory is meant' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and __fish_seen_subcommand_from import" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and __fish_seen_subcommand_from import" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and __fish_seen_subcommand_from import" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and __fish_seen_subcommand_from help" -f -a "export" -d 'Write the customer\'s identity and master key to FILE (created 0600; it must not exist). With it alone a new machine finds the suppliers and restores everything: keep it offline and safe'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and __fish_seen_subcommand_from help" -f -a "import" -d 'Put the keys from FILE (written by `key export`) into the customer\'s key directory; then start the customer-agent, which finds its supplier list in the DHT and its catalog on the suppliers'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand key; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand start-afresh" -l run-dir -d 'Where the daemons\' sockets are' -r -F
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand start-afresh" -l yes -d 'Really give the old backups up'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand start-afresh" -l json -d 'Print machine-readable JSON instead of text'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand start-afresh" -s q -l quiet -d 'Print nothing on success (for cron); errors still go to stderr'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand start-afresh" -s h -l help -d 'Print help'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "status" -d 'This customer\'s node id, suppliers and backups'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "backup" -d 'Back PATH... up to the suppliers (a new version of the backup of the same paths by the same user); bitdustctl reads the files, as the user running it'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "list" -d 'List the backups and their versions (root and the user bitdust see every backup; other users their own)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "restore" -d 'Restore a backup version into a new or empty directory; bitdustctl creates the files, as the user running it, and writes them or has the customer-agent write the content of the large ones into them'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "ls" -d 'List the entries of a snapshot, or those under PATH (the agent needs master.key). With --json, one JSON object per line'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "diff" -d 'What changed from snapshot A to snapshot B of one backup: "+" added, "-" removed, "M" modified (content, mode, mtime, kind or target). With --json, one JSON object per line'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "forget" -d 'Forget snapshots by policy (restic\'s --keep-* flags) or one ID@VERSION: their roots are deleted, then the packs no snapshot left references, at every supplier (one that is away later)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "prune" -d 'Delete at every supplier the packs no snapshot references (those a supplier that was away still holds: backups, delete and forget prune as they go) and fragments of packs nothing knows, after repacking mostly-unused packs. Exits 4 when something is left for the next prune (a supplier away, or a backup running now)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "check" -d 'Check a snapshot backup: every root, every fragment of every pack (headers, signatures, hashes) at the suppliers, and every snapshot\'s entries against the index; --read-data-subset also decrypts packs and checks every chunk in them'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "stats" -d 'Sizes of a snapshot backup: logical (all snapshots), unique, compressed, packed (before the erasure code) and stored (after it), and the deduplication ratio'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "delete" -d 'Delete a version (ID@VERSION) or every version (ID) from the suppliers'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "suppliers" -d 'List the suppliers, or hire or fire one'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "local" -d 'Offline backups to N local directories, one per would-be supplier'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "rebuild" -d 'The rebuilder: its view of the suppliers and its queue'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "key" -d 'Export this customer\'s keys, or import them on a new machine'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "start-afresh" -d 'Give up recovering the backups of imported keys and start as a new customer under the same key: the backups made before are no longer reachable from this agent, and the supplier list it publishes replaces the old one. Without --yes, says so and does nothing'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and not __fish_seen_subcommand_from status backup list restore ls diff forget prune check stats delete suppliers local rebuild key start-afresh help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and __fish_seen_subcommand_from suppliers" -f -a "hire" -d 'Hire the supplier at ADDR (host:port, or NODEID@host:port to pin its key) for the first free position, or --position. Without ADDR, hire suppliers found in the DHT: for --position, or for every free position'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and __fish_seen_subcommand_from suppliers" -f -a "fire" -d 'Fire the supplier at POSITION: it deletes our fragments, the position becomes free'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and __fish_seen_subcommand_from local" -f -a "backup" -d 'Back PATH... up into DIR/<position>/ for positions 0..N-1: a deduplicated snapshot (only new content is stored; DIR/state keeps the index and the files cache)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and __fish_seen_subcommand_from local" -f -a "restore" -d 'Restore a backup from whatever positions of DIR are present'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and __fish_seen_subcommand_from local" -f -a "verify" -d 'Check every fragment and report per pack how many more positions may be lost'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and __fish_seen_subcommand_from local" -f -a "list" -d 'List the snapshots in DIR: ID@VERSION, time, size, what each added, and its paths (those need master.key)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and __fish_seen_subcommand_from local" -f -a "ls" -d 'List the entries of a snapshot, or those under PATH (needs master.key). With --json, one JSON object per line'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and __fish_seen_subcommand_from local" -f -a "diff" -d 'What changed from snapshot A to snapshot B: "+" added, "-" removed, "M" modified (content, mode, mtime, kind or target); needs master.key. With --json, one JSON object per line'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and __fish_seen_subcommand_from local" -f -a "forget" -d 'Forget snapshots by policy (restic\'s --keep-* flags) or one ID@VERSION: their roots are removed; their data stays until a prune (--prune runs one right after)'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and __fish_seen_subcommand_from local" -f -a "prune" -d 'Delete the packs no remaining snapshot references, at every position (a position directory that is missing now is done by a later prune). Safe to interrupt; needs no master.key'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and __fish_seen_subcommand_from local" -f -a "check" -d 'Check a backup: every root, every fragment of every pack (headers, signatures, hashes), and with master.key every snapshot\'s entries against the index; --read-data-subset also decrypts packs and checks every chunk in them'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and __fish_seen_subcommand_from local" -f -a "stats" -d 'Sizes of a backup: logical (all snapshots), unique, compressed, packed (before the erasure code) and stored (after it), and the deduplication ratio. Needs no master.key'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and __fish_seen_subcommand_from rebuild" -f -a "status" -d 'The rebuilder\'s view of the suppliers, its counters and its queue'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and __fish_seen_subcommand_from key" -f -a "export" -d 'Write the customer\'s identity and master key to FILE (created 0600; it must not exist). With it alone a new machine finds the suppliers and restores everything: keep it offline and safe'
complete -c bitdustctl -n "__fish_bitdustctl_using_subcommand help; and __fish_seen_subcommand_from key" -f -a "import" -d 'Put the keys from FILE (written by `key export`) into the customer\'s key directory; then start the customer-agent, which finds its supplier list in the DHT and its catalog on the suppliers'
