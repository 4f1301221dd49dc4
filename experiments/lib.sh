# Shared by the experiment drivers (sourced): resumable runs of metaplast commands.

# once DIR FILE COMMAND...: run COMMAND --out DIR, its output in DIR.log, unless DIR/FILE exists
# (the file a finished run leaves: transfer.json, metrics.json)
once() {
  local dir=$1 file=$2
  shift 2
  [ -e "$dir/$file" ] || "$@" --out "$dir" > "$dir.log" 2>&1
}
