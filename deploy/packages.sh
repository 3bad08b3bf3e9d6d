# Sourced by deploy/test.sh and deploy/demo.sh: installs what a script needs from Debian
# packages when it is missing, the way deploy/zk-local.sh installs ZooKeeper.
#
#   need_packages WHO CHECK=PACKAGE...
#
# CHECK is a command name (looked up on PATH) or an absolute path (must exist). Missing ones
# are installed with apt-get (sudo when not root) in one go; without apt-get, the script fails
# naming the packages to install by hand.
need_packages() {
  local who=$1 item check pkg missing=()
  shift
  for item in "$@"; do
    check=${item%%=*} pkg=${item#*=}
    case $check in
      /*) [ -e "$check" ] && continue ;;
      *) command -v "$check" >/dev/null 2>&1 && continue ;;
    esac
    case " ${missing[*]} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$who: missing ${missing[*]} and no apt-get: install them (Debian package names) by hand" >&2
    return 1
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "$who: installing ${missing[*]} (Debian packages)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
