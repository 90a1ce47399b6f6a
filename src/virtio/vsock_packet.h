// The virtio-vsock packet header and constants (virtio 1.2, section 5.10).
//
// Every packet on the rx and tx queues starts with struct virtio_vsock_hdr,
// 44 bytes, packed, little endian:
//
//   off  size  field
//    0    8    src_cid
//    8    8    dst_cid
//   16    4    src_port
//   20    4    dst_port
//   24    4    len        payload bytes after the header (RW only)
//   28    2    type       1 = STREAM, 2 = SEQPACKET
//   30    2    op         REQUEST .. CREDIT_REQUEST
//   32    4    flags      SHUTDOWN: RCV (1) | SEND (2)
//   36    4    buf_alloc  sender's receive buffer size
//   40    4    fwd_cnt    bytes the sender has consumed so far
//
// encode()/decode() go through explicit byte offsets, so nothing here
// depends on the host's struct layout or endianness.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace rz::virtio::vsock {

inline constexpr size_t kHdrSize = 44;

// Well-known context ids (<linux/vm_sockets.h>).
inline constexpr uint64_t kCidHypervisor = 0;
inline constexpr uint64_t kCidLocal = 1;
inline constexpr uint64_t kCidHost = 2;
// The smallest CID a guest may have; 0xffffffff is VMADDR_CID_ANY.
inline constexpr uint64_t kMinGuestCid = 3;
inline constexpr uint64_t kMaxGuestCid = 0xfffffffeULL;
// VMADDR_PORT_ANY: never a real port.
inline constexpr uint32_t kPortAny = 0xffffffffU;

// Feature bits (5.10.3).
inline constexpr unsigned kFStream = 0;     // VIRTIO_VSOCK_F_STREAM
inline constexpr unsigned kFSeqpacket = 1;  // VIRTIO_VSOCK_F_SEQPACKET (not offered)

// Queue indices (5.10.2).
inline constexpr uint16_t kRxQueue = 0;
inline constexpr uint16_t kTxQueue = 1;
inline constexpr uint16_t kEventQueue = 2;

// hdr.type
inline constexpr uint16_t kTypeStream = 1;
inline constexpr uint16_t kTypeSeqpacket = 2;

// hdr.op
inline constexpr uint16_t kOpInvalid = 0;
inline constexpr uint16_t kOpRequest = 1;
inline constexpr uint16_t kOpResponse = 2;
inline constexpr uint16_t kOpRst = 3;
inline constexpr uint16_t kOpShutdown = 4;
inline constexpr uint16_t kOpRw = 5;
inline constexpr uint16_t kOpCreditUpdate = 6;
inline constexpr uint16_t kOpCreditRequest = 7;

// hdr.flags for SHUTDOWN: the sender will receive no more / send no more.
inline constexpr uint32_t kShutdownRcv = 1;
inline constexpr uint32_t kShutdownSend = 2;
inline constexpr uint32_t kShutdownBoth = kShutdownRcv | kShutdownSend;

// struct virtio_vsock_event.id (5.10.6.7): on the event queue, 4 bytes.
inline constexpr uint32_t kEventTransportReset = 0;
inline constexpr size_t kEventSize = 4;

// Device configuration: le64 guest_cid.
inline constexpr uint64_t kConfigGuestCid = 0;
inline constexpr uint64_t kConfigSize = 8;

struct Header {
  uint64_t src_cid = 0;
  uint64_t dst_cid = 0;
  uint32_t src_port = 0;
  uint32_t dst_port = 0;
  uint32_t len = 0;
  uint16_t type = 0;
  uint16_t op = 0;
  uint32_t flags = 0;
  uint32_t buf_alloc = 0;
  uint32_t fwd_cnt = 0;
  bool operator==(const Header&) const = default;
};

namespace detail {
template <typename T>
inline void put_le(uint8_t* p, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
}
template <typename T>
inline T get_le(const uint8_t* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return static_cast<T>(v);
}
}  // namespace detail

// Writes `h` into the first kHdrSize bytes of `out` (which must hold them).
inline void encode(const Header& h, std::span<uint8_t, kHdrSize> out) {
  uint8_t* p = out.data();
  detail::put_le<uint64_t>(p + 0, h.src_cid);
  detail::put_le<uint64_t>(p + 8, h.dst_cid);
  detail::put_le<uint32_t>(p + 16, h.src_port);
  detail::put_le<uint32_t>(p + 20, h.dst_port);
  detail::put_le<uint32_t>(p + 24, h.len);
  detail::put_le<uint16_t>(p + 28, h.type);
  detail::put_le<uint16_t>(p + 30, h.op);
  detail::put_le<uint32_t>(p + 32, h.flags);
  detail::put_le<uint32_t>(p + 36, h.buf_alloc);
  detail::put_le<uint32_t>(p + 40, h.fwd_cnt);
}

inline Header decode(std::span<const uint8_t, kHdrSize> in) {
  const uint8_t* p = in.data();
  Header h;
  h.src_cid = detail::get_le<uint64_t>(p + 0);
  h.dst_cid = detail::get_le<uint64_t>(p + 8);
  h.src_port = detail::get_le<uint32_t>(p + 16);
  h.dst_port = detail::get_le<uint32_t>(p + 20);
  h.len = detail::get_le<uint32_t>(p + 24);
  h.type = detail::get_le<uint16_t>(p + 28);
  h.op = detail::get_le<uint16_t>(p + 30);
  h.flags = detail::get_le<uint32_t>(p + 32);
  h.buf_alloc = detail::get_le<uint32_t>(p + 36);
  h.fwd_cnt = detail::get_le<uint32_t>(p + 40);
  return h;
}

// "REQUEST", "RW", ... for logs; "op?" for anything else.
inline const char* op_name(uint16_t op) {
  switch (op) {
    case kOpRequest: return "REQUEST";
    case kOpResponse: return "RESPONSE";
    case kOpRst: return "RST";
    case kOpShutdown: return "SHUTDOWN";
    case kOpRw: return "RW";
    case kOpCreditUpdate: return "CREDIT_UPDATE";
    case kOpCreditRequest: return "CREDIT_REQUEST";
    default: return "op?";
  }
}

}  // namespace rz::virtio::vsock
