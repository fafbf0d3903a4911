#!/usr/bin/env bash
# op-browser.sh - a headless "browser" (curl + cookie jar) for the test OP's devInteractions.
#
#   op-browser.sh device ISSUER USER_CODE [LOGIN] [--deny]
#       Enter USER_CODE at ISSUER/device, confirm, log in as LOGIN (default alice) and
#       consent if asked. Prints "approved" (or "denied" with --deny, which presses Abort).
#       Exit 1 with a message on a wrong/expired/used code or any unexpected page.
#   op-browser.sh login AUTH_URL [LOGIN] [--deliver] [--deny]
#       Open an authorization request URL, log in as LOGIN (default alice), consent if asked
#       (prompt=consent, or OP_AUTO_CONSENT=0), and print the final redirect URL (the client's
#       redirect_uri with code/state/iss, or error=...). --deliver also GETs that URL so a real
#       loopback listener receives it. --deny cancels at the first interaction page
#       (-> error=access_denied).
#
# The password is never checked by devInteractions; OP_BROWSER_PASSWORD (default "password")
# is sent anyway. Set OP_BROWSER_JAR to reuse a cookie jar (= an OP login session) across calls.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

usage() { die "usage: $0 device ISSUER USER_CODE [LOGIN] [--deny] | login AUTH_URL [LOGIN] [--deliver] [--deny]"; }

[ $# -ge 2 ] || usage
MODE=$1
shift
DELIVER=0
DENY=0
ARGS=()
for a in "$@"; do
  case $a in
    --deliver) DELIVER=1 ;;
    --deny) DENY=1 ;;
    --*) usage ;;
    *) ARGS+=("$a") ;;
  esac
done

case $MODE in
  device)
    [ ${#ARGS[@]} -ge 2 ] && [ ${#ARGS[@]} -le 3 ] || usage
    ISSUER=${ARGS[0]%/}
    USER_CODE=${ARGS[1]}
    LOGIN=${ARGS[2]:-alice}
    START_URL="$ISSUER/device"
    ;;
  login)
    [ ${#ARGS[@]} -ge 1 ] && [ ${#ARGS[@]} -le 2 ] || usage
    START_URL=${ARGS[0]}
    LOGIN=${ARGS[1]:-alice}
    ;;
  *) usage ;;
esac
PASSWORD=${OP_BROWSER_PASSWORD:-password}

origin() { [[ $1 =~ ^([A-Za-z][A-Za-z0-9+.-]*://[^/?#]+) ]] && printf '%s\n' "${BASH_REMATCH[1],,}"; }
OP_ORIGIN=$(origin "$START_URL") || die "not an absolute URL: $START_URL"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
JAR=${OP_BROWSER_JAR:-$WORK/jar}
BODY=$WORK/body

STATUS=
LOCATION=
URL=
# fetch URL [curl data args...]: GET without data, POST with. Sets STATUS, LOCATION, URL.
fetch() {
  URL=$1
  shift
  local out
  out=$(curl -sS --max-time 20 -c "$JAR" -b "$JAR" -o "$BODY" -w '%{http_code} %{redirect_url}' \
    "$@" "$URL") || die "request to $URL failed"
  STATUS=${out%% *}
  LOCATION=${out#* }
}

# page_info: classify the HTML page in $BODY; prints 4 lines: kind, form action (absolute),
# the form's hidden inputs (urlencoded), a message (error text; whitespace collapsed).
page_info() {
  "$TESTBED_PYTHON" - "$BODY" "$URL" <<'PY'
import html.parser, sys, urllib.parse

body = open(sys.argv[1], encoding="utf-8", errors="replace").read()
base = sys.argv[2]

class P(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms, self.form, self.stack, self.texts = [], None, [], {"h1": [], "title": [], "pre": [], "p.red": []}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.form = {"id": a.get("id", ""), "action": a.get("action") or base, "inputs": []}
            self.forms.append(self.form)
        elif tag == "input":
            f = self.form if self.form is not None else (self.forms[-1] if self.forms else None)
            if f is not None:
                f["inputs"].append({"name": a.get("name", ""), "type": (a.get("type") or "text").lower(), "value": a.get("value") or ""})
        key = "p.red" if tag == "p" and "red" in (a.get("class") or "").split() else tag
        self.stack.append(key)
    def handle_endtag(self, tag):
        if tag == "form":
            self.form = None
        while self.stack:
            if self.stack.pop().split(".")[0] == tag:
                break
    def handle_data(self, data):
        for key in self.stack:
            if key in self.texts:
                self.texts[key].append(data)

p = P()
p.feed(body)
text = {k: " ".join(" ".join(v).split()) for k, v in p.texts.items()}

def out(kind, form=None, message=""):
    hidden = ""
    action = ""
    if form is not None:
        action = urllib.parse.urljoin(base, form["action"])
        hidden = urllib.parse.urlencode([(i["name"], i["value"]) for i in form["inputs"] if i["type"] == "hidden" and i["name"]])
    print(kind, action, hidden, " ".join(message.split()), sep="\n")
    sys.exit(0)

names = lambda f: {i["name"]: i["value"] for i in f["inputs"]}
for f in p.forms:
    if f["id"] == "op.deviceInputForm":
        out("device_input", f, text["p.red"])
    if f["id"] == "op.deviceConfirmForm":
        out("device_confirm", f)
    n = names(f)
    if "login" in n and n.get("prompt") == "login":
        out("login", f)
    if n.get("prompt") == "consent":
        out("consent", f)
if "Sign-in Success" in text["h1"]:
    out("device_success")
if "something went wrong" in text["title"] or "something went wrong" in text["h1"]:
    out("error", message=text["pre"])
out("unknown", message=(text["title"] + " " + text["h1"]).strip())
PY
}

abort_url() { printf '%s/abort\n' "${URL%%\?*}"; }

code_sent=0
fetch "$START_URL"
for ((step = 0; step < 25; step++)); do
  case $STATUS in
    301 | 302 | 303 | 307 | 308)
      [ -n "$LOCATION" ] || die "HTTP $STATUS without Location at $URL"
      if [ "$(origin "$LOCATION")" = "$OP_ORIGIN" ]; then
        fetch "$LOCATION"
        continue
      fi
      # left the OP: this is the redirect to the client
      if [ "$MODE" = device ]; then
        die "device flow unexpectedly redirected to $LOCATION"
      fi
      printf '%s\n' "$LOCATION"
      case $LOCATION in *[?\&#]error=*) log "authorization ended with an error: $LOCATION" ;; esac
      if [ "$DELIVER" = 1 ]; then
        curl -sS --max-time 10 -o /dev/null "$LOCATION" || die "could not deliver the redirect to $LOCATION"
      fi
      exit 0
      ;;
    200) ;;
    *)
      mapfile -t info < <(page_info)
      if [ "${info[0]:-}" = error ]; then
        die "HTTP $STATUS at $URL: ${info[3]:-}"
      fi
      die "HTTP $STATUS at $URL: $(head -c 400 "$BODY" | tr -s '\n' ' ')"
      ;;
  esac

  mapfile -t info < <(page_info)
  kind=${info[0]:-unknown} action=${info[1]:-} hidden=${info[2]:-} message=${info[3]:-}
  case $kind in
    device_input)
      [ "$MODE" = device ] || die "unexpected device code page at $URL"
      if [ "$code_sent" = 1 ] && [ "$DENY" = 1 ] && [[ $message == *interrupted* ]]; then
        echo denied   # Abort pressed: the OP answers the device's next poll with access_denied
        exit 0
      fi
      if [ "$code_sent" = 1 ]; then
        die "user code $USER_CODE rejected: ${message:-input page shown again}"
      fi
      code_sent=1
      fetch "$action" -d "$hidden" --data-urlencode "user_code=$USER_CODE"
      ;;
    device_confirm)
      if [ "$DENY" = 1 ]; then
        fetch "$action" -d "$hidden" -d abort=yes
      else
        fetch "$action" -d "$hidden"
      fi
      ;;
    login)
      if [ "$DENY" = 1 ]; then
        fetch "$(abort_url)"
        continue
      fi
      fetch "$action" -d "$hidden" --data-urlencode "login=$LOGIN" --data-urlencode "password=$PASSWORD"
      ;;
    consent)
      if [ "$DENY" = 1 ]; then
        fetch "$(abort_url)"
        continue
      fi
      fetch "$action" -d "$hidden"
      ;;
    device_success)
      [ "$MODE" = device ] || die "unexpected device success page at $URL"
      [ "$DENY" = 0 ] || die "device flow succeeded although --deny was given"
      echo approved
      exit 0
      ;;
    error)
      die "OP error page at $URL: $message"
      ;;
    *)
      die "unexpected page at $URL: ${message:-$(head -c 300 "$BODY" | tr -s '\n' ' ')}"
      ;;
  esac
done
die "gave up after $step steps (last page $URL)"
