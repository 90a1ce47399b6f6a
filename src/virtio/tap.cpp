#include "virtio/tap.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "util/error.h"

namespace rz::virtio {

namespace {

constexpr const char* kTunPath = "/dev/net/tun";

// The kernel's own rules for an interface name (dev_valid_name), checked
// here so the user gets a message that says what is wrong with it.
std::string name_problem(const std::string& name) {
  if (name.empty()) return "the name is empty";
  if (name.size() >= IFNAMSIZ) {
    return "the name is longer than " + std::to_string(IFNAMSIZ - 1) + " characters";
  }
  if (name == "." || name == "..") return "the name is not a valid interface name";
  for (char c : name) {
    if (c == '/' || c == ':' || c == '\0' || static_cast<unsigned char>(c) <= ' ' ||
        static_cast<unsigned char>(c) >= 0x7f) {
      return "the name contains a character not allowed in interface names";
    }
  }
  return {};
}

std::string tap_error(const std::string& ifname, const std::string& what) {
  return "--net tap=" + ifname + ": " + what;
}

}  // namespace

std::unique_ptr<Tap> Tap::open(const std::string& ifname) {
  if (std::string p = name_problem(ifname); !p.empty()) {
    throw UsageError(tap_error(ifname, "cannot use this TAP interface: " + p));
  }

  UniqueFd fd(::open(kTunPath, O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) {
    const int err = errno;
    std::string why;
    if (err == ENOENT || err == ENODEV || err == ENXIO) {
      why = std::string(kTunPath) + " is missing (load the tun module: modprobe tun)";
    } else if (err == EACCES || err == EPERM) {
      why = errno_message(std::string("cannot open ") + kTunPath, err) +
            " (run as root or give the user access to it)";
    } else {
      why = errno_message(std::string("cannot open ") + kTunPath, err);
    }
    throw UsageError(tap_error(ifname, why));
  }

  unsigned int features = 0;
  if (::ioctl(fd.get(), TUNGETFEATURES, &features) == 0 && !(features & IFF_VNET_HDR)) {
    throw UsageError(tap_error(ifname, "this kernel's TAP driver lacks IFF_VNET_HDR"));
  }

  ifreq ifr{};
  std::memcpy(ifr.ifr_name, ifname.data(), ifname.size());
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (::ioctl(fd.get(), TUNSETIFF, &ifr) < 0) {
    const int err = errno;
    std::string why;
    switch (err) {
      case EPERM:
      case EACCES:
        why = "permission denied attaching to TAP interface " + ifname +
              " (creating one needs CAP_NET_ADMIN; or create it beforehand with "
              "`ip tuntap add " + ifname + " mode tap user <user>`)";
        break;
      case EBUSY:
        why = "TAP interface " + ifname + " is already in use by another process";
        break;
      case EINVAL:
        why = "interface " + ifname +
              " exists but is not a single-queue TAP interface (is it a TUN, a multi-queue "
              "TAP, or another kind of device?)";
        break;
      default:
        why = errno_message("cannot attach to TAP interface " + ifname + " (TUNSETIFF)", err);
    }
    throw UsageError(tap_error(ifname, why));
  }
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  std::string actual(ifr.ifr_name);

  int hdr = static_cast<int>(kVnetHdrLen);
  if (::ioctl(fd.get(), TUNSETVNETHDRSZ, &hdr) < 0) {
    throw UsageError(tap_error(ifname, errno_message("cannot set the vnet header size on TAP "
                                                     "interface " + actual, errno)));
  }
  // The header is little-endian on x86 without TUNSETVNETLE; no call needed.

  std::unique_ptr<Tap> tap(new Tap(std::move(fd), std::move(actual)));
  try {
    tap->set_offload_flags(0);
  } catch (const Error& e) {
    throw UsageError(tap_error(ifname, e.what()));
  }
  return tap;
}

unsigned Tap::tun_offload_flags(const NetOffloads& o) {
  unsigned flags = 0;
  if (o.csum) {
    flags |= TUN_F_CSUM;
    // Segmentation offloads are only meaningful with checksum offload.
    if (o.tso4) flags |= TUN_F_TSO4;
    if (o.tso6) flags |= TUN_F_TSO6;
    if ((o.tso4 || o.tso6) && o.tso_ecn) flags |= TUN_F_TSO_ECN;
    if (o.ufo) flags |= TUN_F_UFO;
  }
  return flags;
}

void Tap::set_offload_flags(unsigned flags) {
  if (::ioctl(fd_.get(), TUNSETOFFLOAD, static_cast<unsigned long>(flags)) < 0) {
    throw Error(errno_message("TAP interface " + ifname_ + ": TUNSETOFFLOAD", errno));
  }
  offload_flags_ = flags;
}

void Tap::set_offloads(const NetOffloads& offloads) {
  set_offload_flags(tun_offload_flags(offloads));
}

ssize_t Tap::read_frame(std::span<const iovec> iov) {
  const int n = static_cast<int>(std::min<size_t>(iov.size(), IOV_MAX));
  for (;;) {
    const ssize_t r = ::readv(fd_.get(), iov.data(), n);
    if (r >= 0) return r;
    if (errno != EINTR) return -errno;
  }
}

ssize_t Tap::write_frame(std::span<const iovec> iov) {
  const int n = static_cast<int>(std::min<size_t>(iov.size(), IOV_MAX));
  for (;;) {
    const ssize_t r = ::writev(fd_.get(), iov.data(), n);
    if (r >= 0) return r;
    if (errno != EINTR) return -errno;
  }
}

}  // namespace rz::virtio
