// A Linux TAP interface as a virtio-net back-end: /dev/net/tun opened with
// IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, a 12-byte vnet header (the same
// virtio_net_hdr_v1 the guest uses), non-blocking.
#pragma once

#include <memory>
#include <string>

#include "util/fd.h"
#include "virtio/net.h"

namespace rz::virtio {

class Tap final : public NetBackend {
 public:
  // Attaches to the TAP interface `ifname`, creating it if it does not exist
  // (that needs CAP_NET_ADMIN; an existing interface may be owned by the
  // user). Offloads start off. Throws rz::UsageError naming the interface if
  // it cannot be opened (no /dev/net/tun, permission, busy, not a TAP).
  static std::unique_ptr<Tap> open(const std::string& ifname);

  // The interface name the kernel confirmed (the same as asked for, unless
  // it held a "%d" pattern).
  const std::string& ifname() const { return ifname_; }
  // The TUN_F_* flags last passed to TUNSETOFFLOAD.
  unsigned offload_flags() const { return offload_flags_; }
  // TUN_F_* flags for a set of offloads.
  static unsigned tun_offload_flags(const NetOffloads& offloads);

  int fd() const override { return fd_.get(); }
  ssize_t read_frame(std::span<const iovec> iov) override;
  ssize_t write_frame(std::span<const iovec> iov) override;
  void set_offloads(const NetOffloads& offloads) override;
  std::string describe() const override { return "tap " + ifname_; }

 private:
  Tap(UniqueFd fd, std::string ifname) : fd_(std::move(fd)), ifname_(std::move(ifname)) {}
  void set_offload_flags(unsigned flags);

  UniqueFd fd_;
  std::string ifname_;
  unsigned offload_flags_ = 0;
};

}  // namespace rz::virtio
