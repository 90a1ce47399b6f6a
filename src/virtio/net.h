// virtio-net (virtio 1.2, section 5.1): one receive and one transmit queue
// in front of a frame back-end (a TAP interface in production, see tap.h).
//
// Frames cross the back-end with the 12-byte virtio_net_hdr_v1 in front of
// them, the same header the guest puts in front of its own: transmit is a
// writev() of the guest's readable buffers, receive a readv() into the
// guest's writable buffers (zero copy when the frame fits; the part that
// does not fit lands in one bounce buffer of kMaxFrameWithHeader bytes).
//
// Receive with VIRTIO_NET_F_MRG_RXBUF may spread a frame over several
// descriptor chains (num_buffers in the header says how many); without it one
// chain must hold the whole frame, or the frame is dropped.
//
// When the guest stops taking packets (the receive queue has no buffers),
// the device stops polling the back-end's fd for input, so frames wait in
// the TAP's own bounded queue; a receive-queue notification re-enables it.
// At most one frame is held by the device meanwhile (in the bounce buffer).
// Transmit handles at most kTxBudget frames per turn of the event loop, then
// comes back through EPOLLOUT on the back-end fd (also used when a write
// would block), so a busy transmit queue cannot starve receive.
//
// Threading (device.h): activate(), process_queue(), reset() and the
// back-end fd callback all run on the event-loop thread; read_config() may
// run on any thread and only reads immutable data. stats() is thread-safe.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/event_loop.h"
#include "virtio/device.h"

namespace rz::virtio {

// --- virtio-net constants (spec 5.1.3, 5.1.4, 5.1.6) --------------------------
inline constexpr unsigned kNetFCsum = 0;              // device handles partial csum (tx)
inline constexpr unsigned kNetFGuestCsum = 1;         // driver handles partial csum (rx)
inline constexpr unsigned kNetFCtrlGuestOffloads = 2;
inline constexpr unsigned kNetFMtu = 3;
inline constexpr unsigned kNetFMac = 5;
inline constexpr unsigned kNetFGuestTso4 = 7;
inline constexpr unsigned kNetFGuestTso6 = 8;
inline constexpr unsigned kNetFGuestEcn = 9;
inline constexpr unsigned kNetFGuestUfo = 10;
inline constexpr unsigned kNetFHostTso4 = 11;
inline constexpr unsigned kNetFHostTso6 = 12;
inline constexpr unsigned kNetFHostEcn = 13;
inline constexpr unsigned kNetFHostUfo = 14;
inline constexpr unsigned kNetFMrgRxbuf = 15;
inline constexpr unsigned kNetFStatus = 16;
inline constexpr unsigned kNetFCtrlVq = 17;
inline constexpr unsigned kNetFMq = 22;
inline constexpr unsigned kNetFSpeedDuplex = 63;

inline constexpr uint16_t kNetSLinkUp = 1;

// struct virtio_net_hdr_v1 (with num_buffers): what precedes every frame.
inline constexpr size_t kVnetHdrLen = 12;
inline constexpr size_t kVnetHdrFlagsOffset = 0;
inline constexpr size_t kVnetHdrNumBuffersOffset = 10;
// The largest Ethernet frame (without the header) the device moves: a 64 KiB
// GSO frame plus Ethernet and VLAN headers.
inline constexpr size_t kMaxFrameLen = 65550;
inline constexpr size_t kMaxFrameWithHeader = kVnetHdrLen + kMaxFrameLen;  // 65562

// Device configuration layout (struct virtio_net_config).
inline constexpr uint64_t kNetCfgMac = 0;
inline constexpr uint64_t kNetCfgStatus = 6;
inline constexpr uint64_t kNetCfgMaxVirtqueuePairs = 8;
inline constexpr uint64_t kNetCfgMtu = 10;
inline constexpr uint64_t kNetCfgSpeed = 12;
inline constexpr uint64_t kNetCfgDuplex = 16;
inline constexpr uint64_t kNetConfigSize = 24;

inline constexpr uint16_t kNetRxQueue = 0;
inline constexpr uint16_t kNetTxQueue = 1;

// --- MAC addresses --------------------------------------------------------------
using MacAddress = std::array<uint8_t, 6>;

// Parses "06:00:ac:10:00:02" (also with '-' separators); hex digits in either
// case, exactly two per byte. nullopt if malformed.
std::optional<MacAddress> parse_mac(std::string_view text);
// "06:00:ac:10:00:02".
std::string format_mac(const MacAddress& mac);
// A random unicast, locally administered address (first byte xxxxxx10b),
// from getrandom(): what a --net without mac= gets.
MacAddress random_mac();

// --- Back-end ---------------------------------------------------------------------

// Offloads the driver accepts in received frames (negotiated GUEST_* bits):
// what the back-end may leave undone (checksums, segmentation).
struct NetOffloads {
  bool csum = false;     // partial checksums (VIRTIO_NET_F_GUEST_CSUM)
  bool tso4 = false;     // TCPv4 GSO frames (GUEST_TSO4)
  bool tso6 = false;     // TCPv6 GSO frames (GUEST_TSO6)
  bool tso_ecn = false;  // TSO frames with ECN/CWR set (GUEST_ECN)
  bool ufo = false;      // UDP fragmentation offload (GUEST_UFO; never offered)
  bool operator==(const NetOffloads&) const = default;
};
// The offloads a feature set lets the back-end use (TSO/ECN only with csum).
NetOffloads offloads_from_features(uint64_t negotiated);

// Where frames go to and come from. Every frame carries the 12-byte
// virtio_net_hdr_v1 in front. Used on the event-loop thread only.
class NetBackend {
 public:
  virtual ~NetBackend() = default;
  // Polled by the event loop: EPOLLIN when a frame can be read, EPOLLOUT when
  // one can be written. Non-blocking.
  virtual int fd() const = 0;
  // Reads one frame, scattering it over `iov`. Returns its length (the part
  // beyond the iovecs is lost), or -errno (-EAGAIN: no frame waiting).
  virtual ssize_t read_frame(std::span<const iovec> iov) = 0;
  // Writes one frame gathered from `iov`. Returns the bytes written or
  // -errno (-EAGAIN: try again when the fd is writable).
  virtual ssize_t write_frame(std::span<const iovec> iov) = 0;
  // Tells the back-end what the driver accepts in received frames. Throws
  // rz::Error if it cannot be set.
  virtual void set_offloads(const NetOffloads& offloads) = 0;
  // For log messages: "tap tap0".
  virtual std::string describe() const = 0;
};

// --- The device -----------------------------------------------------------------

struct NetConfig {
  MacAddress mac{};
  std::optional<uint16_t> mtu;  // offers VIRTIO_NET_F_MTU when set (68..65535)
  uint16_t queue_size = 256;    // both queues; a power of 2
};

// Counters (monotonic, since construction).
struct NetStats {
  uint64_t tx_frames = 0;        // handed to the back-end
  uint64_t tx_bytes = 0;         // including headers
  uint64_t tx_dropped = 0;       // malformed, too big, or refused by the back-end
  uint64_t tx_would_block = 0;   // writes that hit EAGAIN (retried later)
  uint64_t rx_frames = 0;        // delivered to the guest
  uint64_t rx_bytes = 0;         // including headers
  uint64_t rx_dropped = 0;       // read but not deliverable (too big for a chain, runt)
  uint64_t rx_bad_chains = 0;    // receive chains returned unused (malformed / too small)
  uint64_t rx_starved = 0;       // times input polling stopped for lack of buffers
  uint64_t backend_wakeups = 0;  // back-end fd callbacks
};

class VirtioNet final : public VirtioDevice {
 public:
  // Throws rz::Error on an invalid config (queue size, MTU). The back-end's
  // fd is registered with `loop` on activate() and removed on reset(); the
  // loop must outlive the device.
  VirtioNet(EventLoop& loop, std::unique_ptr<NetBackend> backend, const NetConfig& config);
  ~VirtioNet() override;
  VirtioNet(const VirtioNet&) = delete;
  VirtioNet& operator=(const VirtioNet&) = delete;

  uint16_t device_type() const override;
  std::string name() const override { return "virtio-net"; }
  uint64_t device_features() const override;
  uint16_t num_queues() const override { return 2; }
  uint16_t queue_max_size(uint16_t) const override { return config_.queue_size; }
  void read_config(uint64_t offset, std::span<uint8_t> data) override;
  bool activate(const memory::GuestMemory& mem, uint64_t negotiated_features,
                std::vector<Queue*> queues, std::shared_ptr<Interrupt> irq) override;
  void process_queue(uint16_t index) override;
  void reset() override;

  const NetConfig& config() const { return config_; }
  NetStats stats() const;
  // Whether the back-end fd is currently polled for input (false while the
  // guest has no receive buffers). For tests and diagnostics.
  bool rx_polling() const { return rx_polling_.load(std::memory_order_relaxed); }
  // Receive chains popped but not yet used, and whether a frame waits in the
  // bounce buffer for more of them (both bounded). Loop thread only.
  size_t rx_cached_chains() const { return rx_cache_.size(); }
  bool rx_frame_pending() const { return pending_.active; }

  // Frames handled per transmit turn and per receive turn.
  static constexpr unsigned kTxBudget = 256;
  static constexpr unsigned kRxBudget = 256;

 private:
  struct Counters {
    std::atomic<uint64_t> tx_frames{0}, tx_bytes{0}, tx_dropped{0}, tx_would_block{0};
    std::atomic<uint64_t> rx_frames{0}, rx_bytes{0}, rx_dropped{0}, rx_bad_chains{0};
    std::atomic<uint64_t> rx_starved{0}, backend_wakeups{0};
  };
  // A frame read past the receive chains' capacity (mergeable buffers only):
  // the first `chains` chains of rx_cache_ hold its start, rx_bounce_
  // [offset, offset + remaining) the rest.
  struct PendingRx {
    bool active = false;
    size_t chains = 0;
    size_t offset = 0;
    size_t remaining = 0;
  };

  void on_backend_event(uint32_t events);
  // After each entry point: used-buffer notifications, then the epoll
  // interest set the new state calls for.
  void finish_turn();
  void process_tx();
  // Writes one chain's frame (or drops it if malformed). False if the
  // back-end would block: the caller keeps the chain for later.
  bool transmit(DescriptorChain& chain);
  void process_rx();
  // Pops receive chains until the cache holds `want_bytes`, the queue is
  // empty or the cache holds a queue's worth; unusable chains are completed
  // at once with length 0.
  void refill_rx_cache(size_t want_bytes);
  // Reads and delivers (or drops) one frame. False when it cannot go on: no
  // frame waiting, no buffers, or a frame still waits for buffers.
  bool receive_one();
  // Places the pending frame's tail; false if it still waits for buffers.
  bool continue_pending();
  // Returns the first `chains` cached chains to the driver as one frame.
  void complete_rx(size_t chains, std::span<const uint32_t> lens);
  void drop_rx_cache();
  void set_rx_polling(bool on);
  void update_interest();
  void detach_backend();
  void count(std::atomic<uint64_t>& c, uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }

  EventLoop& loop_;
  std::unique_ptr<NetBackend> backend_;
  const NetConfig config_;
  std::array<uint8_t, kNetConfigSize> config_space_{};

  // Set by activate(), cleared by reset(); loop thread only.
  const memory::GuestMemory* mem_ = nullptr;
  Queue* rxq_ = nullptr;
  Queue* txq_ = nullptr;
  std::shared_ptr<Interrupt> irq_;
  uint64_t features_ = 0;
  bool mergeable_ = false;
  bool guest_csum_ = false;
  bool registered_ = false;     // backend fd in the event loop
  uint32_t interest_ = 0;       // events currently asked of the loop
  bool tx_wait_ = false;        // want EPOLLOUT (budget used up, or EAGAIN)
  bool backend_failed_ = false; // its fd reported an error or hang-up
  bool rx_used_ = false;        // used entries added since the last notification check
  bool tx_used_ = false;
  bool rx_broken_logged_ = false;
  bool tx_broken_logged_ = false;
  uint64_t rx_error_logs_ = 0;
  uint64_t tx_error_logs_ = 0;
  std::atomic<bool> rx_polling_{false};

  std::optional<DescriptorChain> tx_retry_;  // a frame that hit EAGAIN
  std::deque<DescriptorChain> rx_cache_;
  size_t rx_cache_bytes_ = 0;
  PendingRx pending_;
  std::vector<uint8_t> rx_bounce_;  // kMaxFrameWithHeader bytes
  std::vector<uint8_t> tx_bounce_;  // for chains with more buffers than IOV_MAX
  std::vector<iovec> iov_;
  std::vector<uint32_t> rx_lens_;

  Counters counters_;
};

}  // namespace rz::virtio
