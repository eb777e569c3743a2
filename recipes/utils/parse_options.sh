# Kaldi-style option parsing, sourced by run.sh after its defaults:
# `--foo-bar VALUE` sets the shell variable foo_bar, which must already exist.
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) echo "usage: $0 [--stage N] [--stop-stage N] [--nj N] [other --name value options of $0]"; exit 0 ;;
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
