#!/bin/sh
# kinit-then.sh KEYTAB PRINCIPAL COMMAND [ARG...] - `kinit -kt KEYTAB PRINCIPAL` into
# $KRB5CCNAME, then exec COMMAND. bench/robot.sh times htgettoken's robot path with it the
# way sites run it (a cron job: kinit from the keytab, then htgettoken), so that all three
# tools start from the keytab. POSIX sh (dash): the wrapper itself costs well under 1 ms.
set -e
[ $# -ge 3 ] || { echo "usage: $0 KEYTAB PRINCIPAL COMMAND [ARG...]" >&2; exit 2; }
keytab=$1
principal=$2
shift 2
kinit -kt "$keytab" "$principal"
exec "$@"
