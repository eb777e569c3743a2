# Kaldi-style option parsing, sourced by run.sh after its defaults:
# `--foo-bar VALUE` sets the shell variable foo_bar, which must already exist.
# --help lists the options: each `name=default   # comment` line (and the comment lines under it)
# of the script before it sources this file.
print_options() {
  local script=$0
  [ -f "$script" ] || script=$asrkd_caller/$0   # run.sh went to its own dir
  echo "usage: $0 [--name value ...]; the options, their defaults and what they do:"
  awk '/parse_options\.sh/ {exit}
       match($0, /^[a-z][a-z0-9_]*=/) {
         name = substr($0, 1, RLENGTH - 1); rest = substr($0, RLENGTH + 1); value = rest; text = ""
         if ((i = index(rest, "#")) > 0) { value = substr(rest, 1, i - 1); text = substr(rest, i + 1) }
         gsub(/_/, "-", name); sub(/[ \t]+$/, "", value); sub(/^ +/, "", text)
         printf "  --%s (default: %s)\n", name, value == "" ? "none" : value
         if (text != "") printf "      %s\n", text; more = 1; next }
       more && /^[ \t]+#/ { sub(/^[ \t]+# ?/, ""); printf "      %s\n", $0; next }
       { more = 0 }' "$script"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) print_options; exit 0 ;;
    --*=*) name=${1%%=*}; value=${1#*=}; shift ;;
    --*) [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 1; }
         name=$1; value=$2; shift 2 ;;
    *) echo "$0: unexpected argument '$1'" >&2; exit 1 ;;
  esac
  name=${name#--}; name=${name//-/_}
  if [ -z "${!name+x}" ]; then echo "$0: unknown option --${name//_/-}" >&2; exit 1; fi
  case $name:$value in  # a path given on the command line is relative to where run.sh was started
    *_dir:/*|*_config:/*) ;;
    *_dir:*|*_config:*) value=$asrkd_caller/$value ;;
  esac
  printf -v "$name" '%s' "$value"
done
for name in stage stop_stage nj threads; do
  if [ -n "${!name+x}" ] && ! [[ ${!name} =~ ^[0-9]+$ ]]; then
    echo "$0: --${name//_/-} must be a non-negative integer, got '${!name}'" >&2; exit 1
  fi
done
if [ -n "${nj+x}" ] && [ "$nj" -lt 1 ]; then echo "$0: --nj must be at least 1" >&2; exit 1; fi
if [ -n "${stage+x}" ] && [ -n "${stop_stage+x}" ] && [ "$stage" -gt "$stop_stage" ]; then
  echo "$0: --stage $stage is after --stop-stage $stop_stage: nothing to run" >&2; exit 1
fi
