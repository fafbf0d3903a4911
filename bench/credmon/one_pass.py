#!/usr/bin/env python3
"""bench/credmon/one_pass.py SRC CRED_DIR LOG - one pass of upstream scitokens-credmon.

SRC is an export of htcondor/scitokens-credmon (the directory holding credmon/). Runs exactly
what one turn of the loop in upstream's bin/condor_credmon_oauth (start_credmon_process)
does, in the same order and with the same error handling:

    credmon_incomplete(cred_dir)
    for credmon in [OAuthCredmon(cred_dir), LocalCredmon(cred_dir)]:
        try: credmon.scan_tokens()
        except Exception: logger.exception(...)
    credmon_complete(cred_dir)

after the daemon's own start-up steps (set_subsystem, get_cred_dir, setup_logging at INFO as
the daemon logs by default, create_credentials, drop_pid). Upstream's daemon sleeps 60 s
between such turns; it has no cache, so a later turn in a long-running daemon costs what a
turn in a new process costs.

Configuration comes from CONDOR_CONFIG (written by bench/credmon.sh). Prints one JSON line:
{"pass_ms": …} — the turn only, without interpreter start-up, imports and construction, the
same span credkeeper's "pass over N users in X ms" covers.
"""
import json
import logging
import os
import sys
import time


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    src, cred_dir, log_path = sys.argv[1:]
    sys.path.insert(0, src)
    # The daemon's script name is the logger name upstream uses.
    sys.argv[0] = "condor_credmon_oauth"

    import htcondor
    from credmon.CredentialMonitors.OAuthCredmon import OAuthCredmon
    from credmon.CredentialMonitors.LocalCredmon import LocalCredmon
    from credmon.utils import (setup_logging, get_cred_dir, drop_pid, credmon_incomplete,
                               credmon_complete, create_credentials)

    htcondor.set_subsystem("CREDMON_OAUTH", htcondor.SubsystemType.Daemon)
    cred_dir = get_cred_dir(cred_dir=cred_dir)
    logger = setup_logging(log_path=log_path, log_level=logging.INFO)
    logger.info("Starting condor_credmon (bench/credmon/one_pass.py: one turn)")
    create_credentials()
    drop_pid(cred_dir)

    credmon_incomplete(cred_dir)
    credmons = [OAuthCredmon(cred_dir), LocalCredmon(cred_dir)]
    started = time.perf_counter()
    for credmon in credmons:
        try:
            credmon.scan_tokens()
        except Exception:
            logger.exception("Fatal error while scanning for tokens")
    credmon_complete(cred_dir)
    pass_ms = (time.perf_counter() - started) * 1000
    logger.info("one turn in %.0f ms", pass_ms)
    print(json.dumps({"pass_ms": round(pass_ms, 1)}))


if __name__ == "__main__":
    main()
