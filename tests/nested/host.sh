# Builds the nested test host (bash, sourced by tests/nested/run after tests/kit/lib.sh).
#
# The host is Debian's generic kernel (linux-image-6.1.0-NN-amd64, unmodified: it has
# 9p, kvm and kvm-amd as modules) plus a busybox initramfs whose /init is
# tests/nested/host-init. The kernel is booted as the ELF vmlinux taken out of the
# bzImage, through its PVH entry: that skips the xz decompressor, which takes
# over ten seconds under TCG. Result, in the cache:
#   $(rz_cache_dir)/nested/<key>/kernel       (vmlinux, or vmlinuz if not PVH-capable)
#   $(rz_cache_dir)/nested/<key>/initrd.img
#   $(rz_cache_dir)/nested/<key>/kernel-package   ("PACKAGE VERSION")
# <key> hashes this file, host-init, tests/kit/lib.sh and the kernel package version,
# so a change to any of them, or a new Debian kernel, builds a new host.

rz_nested_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Modules the host loads, in this order (dependencies are added before each).
rz_nested_modules=(
  virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
  '?virtio-rng'
  netfs fscache 9pnet 9pnet_virtio 9p
  irqbypass kvm ccp kvm-amd
  tun '?overlay'
)

# rz_nested_host -> sets rz_host_dir to a directory holding vmlinuz and initrd.img,
# building them first when missing or stale.
rz_nested_host() {
  local pkgver pkg ver key cache
  cache=$(rz_cache_dir)
  pkgver=$(rz_kernel_pkg amd64) || exit 125
  pkg=${pkgver% *}
  ver=${pkgver#* }
  key=$( (cat "${BASH_SOURCE[0]}" "$rz_nested_dir/host-init" "$rz_nested_dir/../kit/lib.sh"; echo "$pkgver") |
    sha256sum | cut -c1-16)
  rz_host_dir="$cache/nested/$key"
  touch "$rz_host_dir" 2>/dev/null
  if [ ! -f "$rz_host_dir/initrd.img" ] || [ ! -f "$rz_host_dir/kernel" ]; then
    rz_with_lock "$cache/nested/.lock" _rz_nested_build "$pkg" "$ver" "$rz_host_dir" || exit 125
  fi
}

_rz_nested_build() {
  local pkg=$1 ver=$2 out=$3
  # Another run may have built it while this one waited for the lock.
  [ -f "$out/initrd.img" ] && [ -f "$out/kernel" ] && return 0
  rz_require busybox-static cpio xz-utils
  local t0 deb kver
  t0=$(rz_now)
  rz_note "building the nested host from $pkg $ver into $out"
  deb=$(rz_fetch_deb "$pkg" "$ver") || exit 125
  work=$(mktemp -d "$(dirname "$out")/.build.XXXXXX")
  trap 'rm -rf "$work"' EXIT  # runs in rz_with_lock's subshell
  dpkg -x "$deb" "$work/pkg" || rz_die "dpkg -x $deb failed"
  kver=$(ls -1 "$work/pkg/lib/modules" | head -n1)
  [ -n "$kver" ] && [ -f "$work/pkg/boot/vmlinuz-$kver" ] || rz_die "$deb holds no kernel"
  rz_busybox_root "$work/root"
  rz_install_modules "$work/pkg/lib/modules/$kver" "$work/root" "${rz_nested_modules[@]}"
  install -m 755 "$rz_nested_dir/host-init" "$work/root/init"
  mkdir -p "$work/out"
  rz_pack_cpio "$work/root" "$work/out/initrd.img"
  if grep -qx CONFIG_PVH=y "$work/pkg/boot/config-$kver" &&
    rz_extract_vmlinux "$work/pkg/boot/vmlinuz-$kver" "$work/out/kernel"; then
    :
  else
    rz_note "booting the nested host through the bzImage (no PVH vmlinux)"
    cp "$work/pkg/boot/vmlinuz-$kver" "$work/out/kernel"
  fi
  cp "$work/pkg/boot/config-$kver" "$work/out/config"
  echo "$pkg $ver" >"$work/out/kernel-package"
  rm -rf "$out"
  mkdir -p "$(dirname "$out")"
  mv "$work/out" "$out"
  # Hosts built by other versions of these scripts, unused for two days.
  find "$(dirname "$out")" -mindepth 1 -maxdepth 1 -type d -name '[0-9a-f]*' -mtime +1 \
    -exec rm -rf {} + 2>/dev/null
  rz_note "nested host built in $(rz_elapsed "$t0") s"
}
