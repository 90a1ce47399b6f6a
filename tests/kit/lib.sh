# Shared helpers for tests/kit/* and tests/nested/* (bash, sourced).
#
# They fetch Debian kernel packages, resolve module dependencies and pack busybox
# initramfs images into a cache outside the source tree:
#   ${RZ_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ringzero}
# Everything here fails through rz_die, which prints one line and exits 125.

rz_prog=${rz_prog:-rz}

rz_die() {
  echo "$rz_prog: error: $*" >&2
  exit 125
}

rz_note() {
  echo "$rz_prog: $*" >&2
}

rz_cache_dir() {
  echo "${RZ_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ringzero}"
}

# Seconds since the epoch with nanoseconds, for phase timings.
rz_now() {
  date +%s.%N
}

# rz_elapsed START -> seconds (3 decimals) since START (a rz_now value).
rz_elapsed() {
  local now
  now=$(rz_now)
  awk -v a="$1" -v b="$now" 'BEGIN { printf "%.3f", b - a }'
}

# rz_require PACKAGE... installs the Debian packages that are not installed yet.
rz_require() {
  local pkg missing=""
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
      missing="$missing $pkg"
  done
  [ -z "$missing" ] && return 0
  rz_note "installing missing packages:$missing"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  # shellcheck disable=SC2086
  if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing >&2; then
    $sudo apt-get update -q >&2 || true
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing >&2 ||
      rz_die "could not install:$missing"
  fi
}

# rz_with_lock FILE CMD... runs CMD while holding an exclusive flock on FILE, so
# that concurrent runs with a cold cache build it once.
rz_with_lock() {
  local lockfile=$1
  shift
  mkdir -p "$(dirname "$lockfile")"
  (
    flock -w 1800 9 || rz_die "timed out waiting for lock $lockfile"
    "$@"
  ) 9>"$lockfile"
}

# rz_kernel_pkg FLAVOUR -> "PACKAGE VERSION" of Debian's current kernel image for
# FLAVOUR (amd64 = the generic kernel, cloud-amd64 = the cloud kernel), as named by
# the meta package linux-image-FLAVOUR. Falls back to the newest downloaded .deb
# when apt's lists are unavailable.
rz_kernel_pkg() {
  # apt-cache needs a second or more here; remember its answer for as long as
  # apt's package lists stay the same.
  local stamp memo line
  stamp=$(ls -l --time-style=+%s /var/lib/apt/lists/ 2>/dev/null | sha256sum | cut -c1-16)
  memo="$(rz_cache_dir)/apt-$1"
  if [ -f "$memo" ]; then
    read -r line <"$memo"
    if [ "${line%% *}" = "$stamp" ]; then
      echo "${line#* }"
      return 0
    fi
  fi
  line=$(_rz_kernel_pkg_query "$1") || return 1
  { mkdir -p "$(rz_cache_dir)" && echo "$stamp $line" >"$memo.$$" && mv "$memo.$$" "$memo"; } 2>/dev/null
  echo "$line"
}

_rz_kernel_pkg_query() {
  local flavour=$1 pkg="" ver="" tries
  for tries in 1 2; do
    pkg=$(apt-cache depends "linux-image-$flavour" 2>/dev/null |
      sed -n "s/^ *Depends: \(linux-image-[0-9][^ ]*-$flavour\)\$/\1/p" | head -n1)
    if [ -n "$pkg" ]; then
      ver=$(apt-cache policy "$pkg" 2>/dev/null | sed -n 's/^ *Candidate: *//p' | head -n1)
      [ "$ver" = "(none)" ] && ver=""
    fi
    [ -n "$pkg" ] && [ -n "$ver" ] && break
    [ "$tries" = 1 ] || break
    if [ -z "$(rz_cached_kernel_deb "$flavour")" ]; then
      rz_note "apt does not know linux-image-$flavour; running apt-get update"
      apt-get update -q >/dev/null 2>&1 || true
    else
      break
    fi
  done
  if [ -n "$pkg" ] && [ -n "$ver" ]; then
    echo "$pkg $ver"
    return 0
  fi
  local deb
  deb=$(rz_cached_kernel_deb "$flavour")
  [ -n "$deb" ] || rz_die "cannot find Debian package linux-image-$flavour (apt-cache depends linux-image-$flavour gave nothing and no .deb is cached in $(rz_cache_dir)/debs)"
  deb=$(basename "$deb" .deb)
  echo "${deb%%_*} $(echo "$deb" | cut -d_ -f2 | sed 's/%3a/:/g')"
}

rz_cached_kernel_deb() {
  ls -1 "$(rz_cache_dir)"/debs/linux-image-[0-9]*-"$1"_*.deb 2>/dev/null | sort -V | tail -n1
}

# rz_fetch_deb PACKAGE VERSION -> path of the .deb in the cache (downloads it once).
rz_fetch_deb() {
  local pkg=$1 ver=$2 dir f
  dir="$(rz_cache_dir)/debs"
  mkdir -p "$dir"
  f=$(ls -1 "$dir/${pkg}_$(echo "$ver" | sed 's/:/%3a/g')_"*.deb 2>/dev/null | head -n1)
  if [ -z "$f" ]; then
    local tmp
    tmp=$(mktemp -d "$dir/.download.XXXXXX")
    chmod 755 "$tmp"
    rz_note "downloading $pkg $ver"
    if ! (cd "$tmp" && apt-get download -q "$pkg=$ver" >download.log 2>&1); then
      cat "$tmp/download.log" >&2
      rm -rf "$tmp"
      rz_die "apt-get download $pkg=$ver failed"
    fi
    f=$(ls -1 "$tmp"/*.deb 2>/dev/null | head -n1)
    [ -n "$f" ] || { rm -rf "$tmp"; rz_die "apt-get download $pkg=$ver produced no .deb"; }
    mv "$f" "$dir/"
    f="$dir/$(basename "$f")"
    rm -rf "$tmp"
  fi
  echo "$f"
}

# rz_module_index MODDIR indexes the module files under MODDIR/kernel (.ko, .ko.xz,
# .ko.zst, .ko.gz) by module name ('-' and '_' are the same in module names).
rz_module_index() {
  local f b
  declare -gA rz_modindex=()
  while IFS= read -r f; do
    b=${f##*/}
    b=${b%%.ko*}
    rz_modindex[${b//-/_}]=$f
  done < <(find "$1/kernel" -name '*.ko*' -type f)
}

# rz_module_is_builtin MODDIR NAME -> status 0 when NAME is built into the kernel.
rz_module_is_builtin() {
  local moddir=$1 want=${2//-/_}
  [ -f "$moddir/modules.builtin" ] || return 1
  sed 's|.*/||; s|\.ko$||; s|-|_|g' "$moddir/modules.builtin" | grep -qx -- "$want"
}

# rz_module_read FILE -> the module's bytes, decompressed, on stdout.
rz_module_read() {
  case $1 in
    *.ko) cat "$1" ;;
    *.ko.xz) xz -dc "$1" ;;
    *.ko.zst) zstd -qdc "$1" ;;
    *.ko.gz) gzip -dc "$1" ;;
    *) echo "unknown module format: $1" >&2; return 1 ;;
  esac
}

# rz_module_deps FILE -> the names in the module's depends= field, one a line.
rz_module_deps() {
  rz_module_read "$1" | tr '\0' '\n' | grep -a -m1 '^depends=' | sed 's/^depends=//' | tr ',' '\n' | sed '/^$/d'
}

# rz_module_order MODDIR NAME... sets the array rz_modorder to the module files to
# insmod, each after its dependencies. Built-in modules are skipped; a name that
# is neither built in nor present as a file is an error unless it is prefixed
# with '?' (optional).
rz_module_order() {
  local moddir=$1
  shift
  rz_module_index "$moddir"
  declare -gA rz_modseen=()
  rz_modorder=()
  local n opt
  for n in "$@"; do
    opt=""
    case $n in \?*) opt=1; n=${n#\?} ;; esac
    if ! _rz_module_visit "$moddir" "$n"; then
      [ -n "$opt" ] || rz_die "module $n is neither built into the kernel nor present in $moddir"
    fi
  done
}

_rz_module_visit() {
  local moddir=$1 name=${2//-/_} f dep deps
  [ -n "${rz_modseen[$name]:-}" ] && return 0
  f=${rz_modindex[$name]:-}
  if [ -z "$f" ]; then
    rz_module_is_builtin "$moddir" "$name" || return 1
    rz_modseen[$name]=1
    return 0
  fi
  rz_modseen[$name]=1
  deps=$(rz_module_deps "$f")
  for dep in $deps; do
    _rz_module_visit "$moddir" "$dep" || rz_die "module $name needs $dep, which is missing in $moddir"
  done
  rz_modorder+=("$f")
}

# rz_install_modules MODDIR ROOT NAME... copies the modules NAME (with their
# dependencies, decompressed) into ROOT/lib/modules and writes ROOT/lib/modules/order
# (file names in load order).
rz_install_modules() {
  local moddir=$1 root=$2
  shift 2
  rz_module_order "$moddir" "$@"
  mkdir -p "$root/lib/modules"
  : >"$root/lib/modules/order"
  local f b
  for f in "${rz_modorder[@]}"; do
    b=${f##*/}
    b=${b%%.ko*}.ko
    rz_module_read "$f" >"$root/lib/modules/$b" || rz_die "cannot read module $f"
    echo "$b" >>"$root/lib/modules/order"
  done
}

# rz_busybox_root ROOT makes a minimal busybox root in ROOT.
rz_busybox_root() {
  local root=$1 bb=/bin/busybox
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" ||
    rz_die "busybox-static is not installed (a static /bin/busybox is needed)"
  mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,mnt,etc,root}
  cp "$bb" "$root/bin/busybox"
  local a
  for a in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"
  done
}

# rz_pack_cpio ROOT OUT packs ROOT as a newc cpio archive (uncompressed: the kernel
# unpacks it fastest and the image is loaded straight from the host file).
rz_pack_cpio() {
  local root=$1 out=$2
  (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$out.tmp" ||
    rz_die "cpio failed for $root"
  mv "$out.tmp" "$out"
}

# rz_hash FILE... -> sha256 of the files' contents together.
rz_hash() {
  cat "$@" | sha256sum | cut -c1-16
}

# rz_extract_vmlinux BZIMAGE OUT writes the ELF kernel inside a bzImage (its
# compressed payload, located through the setup header, decompressed) to OUT.
# Such a vmlinux boots through the PVH entry (QEMU -kernel) without running the
# decompressor, which under TCG takes seconds.
rz_extract_vmlinux() {
  local bz=$1 out=$2 setup_sects poff plen start magic dec
  [ "$(od -An -c -j 0x202 -N4 "$bz" | tr -d ' ')" = HdrS ] || { echo "$bz is not a bzImage" >&2; return 1; }
  setup_sects=$(od -An -tu1 -j 0x1f1 -N1 "$bz" | tr -d ' ')
  [ "$setup_sects" -eq 0 ] && setup_sects=4
  poff=$(od -An -tu4 -j 0x248 -N4 "$bz" | tr -d ' ')
  plen=$(od -An -tu4 -j 0x24c -N4 "$bz" | tr -d ' ')
  start=$(((setup_sects + 1) * 512 + poff))
  magic=$(od -An -tx1 -j "$start" -N4 "$bz" | tr -d ' ')
  case $magic in
    fd377a58) dec="xz -dc --single-stream" ;;
    1f8b*) dec="gzip -dc" ;;
    28b52ffd) dec="zstd -qdc" ;;
    02214c18) dec="lz4 -dc" ;;
    *) echo "$bz: unsupported payload compression (magic $magic)" >&2; return 1 ;;
  esac
  # The payload ends with the 4-byte uncompressed size, which the decompressors
  # would read as trailing garbage: hand them the stream without it.
  tail -c +$((start + 1)) "$bz" | head -c $((plen - 4)) | $dec >"$out.tmp"
  [ "${PIPESTATUS[2]}" = 0 ] || { rm -f "$out.tmp"; echo "$bz: cannot decompress the payload" >&2; return 1; }
  [ "$(od -An -c -N4 "$out.tmp" | tr -d ' ')" = 177ELF ] || { rm -f "$out.tmp"; echo "$bz: payload is not an ELF kernel" >&2; return 1; }
  mv "$out.tmp" "$out"
}
