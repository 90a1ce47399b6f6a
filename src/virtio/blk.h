// virtio-blk (virtio 1.2, section 5.2) on a raw image file.
//
// The image is opened at construction: O_RDWR (O_RDONLY for readonly=on) |
// O_CLOEXEC, and locked with an open-file-description lock on the whole file
// (a write lock, or a read lock when read-only), so a second ringzero cannot
// write the image while this one uses it: it fails with
// "disk <path> is in use by another process". Its size comes from fstat (or
// BLKGETSIZE64 for a block device); a size that is not a multiple of 512 is
// rounded down to whole sectors with a warning (the tail is unreachable), and
// an image smaller than one sector is refused.
//
// One request queue. Requests are completed when the back-end (blk_backend.h,
// engine=sync|io_uring) reports them done, so no write is acknowledged to the
// guest before pwritev (or its io_uring completion) returned; FLUSH is
// fdatasync. A request the guest laid out wrongly completes with
// VIRTIO_BLK_S_IOERR (or UNSUPP for an unknown type), or with used length 0
// and no status when it has no writable byte for one.
//
// Threading (device.h): activate/process_queue/process_completions/reset on
// the event-loop thread; read_config from vCPU threads (the configuration
// space never changes after construction, so it needs no lock).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/event_loop.h"
#include "util/fd.h"
#include "virtio/blk_backend.h"
#include "virtio/device.h"

namespace rz::virtio {

// --- virtio-blk constants (virtio 1.2, 5.2) --------------------------------
// Feature bits (5.2.3).
inline constexpr unsigned kVirtioBlkFSizeMax = 1;
inline constexpr unsigned kVirtioBlkFSegMax = 2;
inline constexpr unsigned kVirtioBlkFGeometry = 4;
inline constexpr unsigned kVirtioBlkFRo = 5;
inline constexpr unsigned kVirtioBlkFBlkSize = 6;
inline constexpr unsigned kVirtioBlkFFlush = 9;
inline constexpr unsigned kVirtioBlkFTopology = 10;
inline constexpr unsigned kVirtioBlkFConfigWce = 11;
inline constexpr unsigned kVirtioBlkFMq = 12;
inline constexpr unsigned kVirtioBlkFDiscard = 13;
inline constexpr unsigned kVirtioBlkFWriteZeroes = 14;

// Request types (5.2.6).
inline constexpr uint32_t kVirtioBlkTIn = 0;
inline constexpr uint32_t kVirtioBlkTOut = 1;
inline constexpr uint32_t kVirtioBlkTFlush = 4;
inline constexpr uint32_t kVirtioBlkTGetId = 8;
inline constexpr uint32_t kVirtioBlkTGetLifetime = 10;
inline constexpr uint32_t kVirtioBlkTDiscard = 11;
inline constexpr uint32_t kVirtioBlkTWriteZeroes = 13;
inline constexpr uint32_t kVirtioBlkTSecureErase = 14;

// Request status byte.
inline constexpr uint8_t kVirtioBlkSOk = 0;
inline constexpr uint8_t kVirtioBlkSIoErr = 1;
inline constexpr uint8_t kVirtioBlkSUnsupp = 2;

// struct virtio_blk_discard_write_zeroes.flags
inline constexpr uint32_t kVirtioBlkWriteZeroesFlagUnmap = 1;

inline constexpr uint64_t kSectorSize = 512;
inline constexpr size_t kVirtioBlkIdBytes = 20;
inline constexpr size_t kVirtioBlkHeaderSize = 16;  // le32 type, le32 reserved, le64 sector
inline constexpr size_t kVirtioBlkSegmentSize = 16;  // le64 sector, le32 num_sectors, le32 flags

// Offsets of struct virtio_blk_config fields (5.2.4).
struct VirtioBlkConfigLayout {
  static constexpr size_t kCapacity = 0;                   // le64
  static constexpr size_t kSizeMax = 8;                    // le32
  static constexpr size_t kSegMax = 12;                    // le32
  static constexpr size_t kGeometry = 16;                  // le16 cyl, u8 heads, u8 sectors
  static constexpr size_t kBlkSize = 20;                   // le32
  static constexpr size_t kTopology = 24;                  // 8 bytes
  static constexpr size_t kWriteback = 32;                 // u8
  static constexpr size_t kNumQueues = 34;                 // le16
  static constexpr size_t kMaxDiscardSectors = 36;         // le32
  static constexpr size_t kMaxDiscardSeg = 40;             // le32
  static constexpr size_t kDiscardSectorAlignment = 44;    // le32
  static constexpr size_t kMaxWriteZeroesSectors = 48;     // le32
  static constexpr size_t kMaxWriteZeroesSeg = 52;         // le32
  static constexpr size_t kWriteZeroesMayUnmap = 56;       // u8
  static constexpr size_t kSize = 60;                      // through unused1[3]
};

// What --disk describes.
struct BlkConfig {
  std::string path;
  bool readonly = false;
  BlockEngine engine = BlockEngine::kSync;
  // The GET_ID string: at most 20 bytes of printable ASCII. Empty: derived
  // from the path (see default_blk_serial).
  std::string serial;
  // Request queues (VIRTIO_BLK_F_MQ when more than one). 0: the VMM picks
  // (one per vCPU, as QEMU does; a lone device means 1).
  uint16_t queues = 0;
};

// Parses the value of --disk: comma-separated key=value pairs
//   path=<file>        (required; a first element without '=' is the path)
//   readonly=on|off    (also true/false, yes/no, 1/0)
//   engine=sync|io_uring
//   serial=<id>        (alias id=)
//   queues=<n>         request queues, 1..VirtioBlk::kMaxQueues
// ",," stands for a comma inside a value. Throws rz::UsageError naming the
// offending key or value.
BlkConfig parse_blk_config(std::string_view spec);

// The default serial for `path`: up to 11 characters of its file name (other
// than [A-Za-z0-9._-] replaced by '_'), '-', and 8 hex digits of a hash of
// its absolute path: stable for one image, distinct for two images with the
// same name. At most 20 bytes.
std::string default_blk_serial(const std::string& path);

class VirtioBlk final : public VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  // Request queues at most (a bit each in 64-bit masks).
  static constexpr uint16_t kMaxQueues = 64;
  // Advertised limits. seg_max leaves room for the header and status
  // descriptors of a ring without indirect descriptors.
  static constexpr uint32_t kSegMax = kQueueSize - 2;
  static constexpr uint32_t kSizeMax = 1u << 20;
  // A read or write larger than this is refused (IOERR): it bounds the time
  // one request holds the event loop (sync engine).
  static constexpr uint64_t kMaxRequestBytes = uint64_t{kSegMax} * kSizeMax;
  static constexpr uint32_t kMaxDiscardSectors = 1u << 21;  // 1 GiB
  static constexpr uint32_t kMaxWriteZeroesSectors =
      static_cast<uint32_t>(BlockBackend::kMaxWriteZeroesBytes / kSectorSize);

  // Opens and locks the image and sets up the back-end. `loop` (optional,
  // must outlive the device) is where the io_uring engine's completion
  // eventfd is registered while the device is active; without one, the
  // owner calls process_completions() when completion_fd() is readable.
  // Throws rz::UsageError for a bad config or an image that cannot be used
  // (missing, locked, too small, not writable), rz::Error if the engine
  // cannot be set up.
  explicit VirtioBlk(const BlkConfig& config, EventLoop* loop = nullptr);
  ~VirtioBlk() override;
  VirtioBlk(const VirtioBlk&) = delete;
  VirtioBlk& operator=(const VirtioBlk&) = delete;

  // --- VirtioDevice ---------------------------------------------------------
  uint16_t device_type() const override;
  std::string name() const override { return "virtio-blk"; }
  uint64_t device_features() const override { return features_; }
  uint16_t num_queues() const override { return num_queues_; }
  uint16_t queue_max_size(uint16_t /*queue*/) const override { return kQueueSize; }
  void read_config(uint64_t offset, std::span<uint8_t> data) override;
  bool activate(const memory::GuestMemory& mem, uint64_t negotiated_features,
                std::vector<Queue*> queues, std::shared_ptr<Interrupt> irq) override;
  void process_queue(uint16_t index) override;
  void reset() override;

  // --- Completions without an EventLoop (tests, benchmarks) ----------------
  // Readable when process_completions() has work (-1 for engine=sync, whose
  // requests complete inside process_queue()).
  int completion_fd() const { return backend_->event_fd(); }
  // Delivers finished requests to the used ring, then takes more requests
  // from the queue if it had stopped for lack of back-end slots.
  void process_completions();
  uint32_t requests_in_flight() const { return backend_->in_flight(); }

  // --- What was configured ------------------------------------------------
  const std::string& path() const { return path_; }
  bool readonly() const { return readonly_; }
  BlockEngine engine() const { return backend_->engine(); }
  uint64_t capacity_sectors() const { return capacity_; }
  const std::string& serial() const { return serial_; }

  // Counters, for tests and logs (event-loop thread).
  struct Stats {
    uint64_t completed = 0;      // requests put in the used ring
    uint64_t io_errors = 0;      // completed with IOERR
    uint64_t unsupported = 0;    // completed with UNSUPP
    uint64_t bad_chains = 0;     // malformed chains (len 0, no status)
  };
  const Stats& stats() const { return stats_; }

 private:
  struct Pending {
    uint16_t head = 0;
    uint16_t queue = 0;         // the request queue it came from
    uint8_t* status = nullptr;  // the request's status byte in guest memory
    uint32_t ok_len = 0;        // used length on success
  };

  void open_image(const BlkConfig& config);
  void build_config_space(uint32_t discard_alignment);
  static uint64_t queue_bit(uint16_t q) { return uint64_t{1} << q; }
  uint64_t all_queues() const {
    return num_queues_ == 64 ? ~uint64_t{0} : (uint64_t{1} << num_queues_) - 1;
  }
  // Takes requests from the queues in `which` (a bit per queue) until each
  // is empty, the back-end is full or the per-call budget is spent; then
  // notifies the driver for each queue that wants it.
  void pump(uint64_t which);
  void handle(uint16_t q, const DescriptorChain& chain);
  void submit_io(const BlockIo& io, const Pending& p);
  void complete(uint16_t q, uint16_t head, uint8_t* status, uint8_t value, uint32_t len);
  void on_backend_done(uint64_t cookie, int result);
  void signal_used();
  void log_guest_error(const std::string& what);
  void log_io_error(int err);

  std::string path_;
  bool readonly_ = false;
  std::string serial_;
  uint64_t capacity_ = 0;  // sectors
  uint64_t features_ = 0;
  std::array<uint8_t, VirtioBlkConfigLayout::kSize> config_{};
  UniqueFd fd_;
  EventLoop* loop_ = nullptr;
  std::unique_ptr<BlockBackend> backend_;
  uint16_t num_queues_ = 1;

  // Active state (event-loop thread).
  const memory::GuestMemory* mem_ = nullptr;
  std::vector<Queue*> queues_;
  std::shared_ptr<Interrupt> irq_;
  uint64_t negotiated_ = 0;
  bool active_ = false;
  bool fd_registered_ = false;
  uint64_t used_mask_ = 0;      // queues with used buffers not yet signalled
  uint64_t broken_logged_ = 0;  // queues whose breakage was logged
  bool pump_posted_ = false;
  uint16_t next_first_ = 0;     // the queue pump() serves first
  std::shared_ptr<VirtioBlk*> self_;  // for posted continuations; reset by reset()
  std::vector<Pending> pending_;      // indexed by back-end cookie
  std::vector<uint32_t> free_pending_;
  std::vector<iovec> iov_;            // scratch for building a request's iovecs
  Stats stats_;
  uint64_t guest_errors_logged_ = 0;
  uint64_t io_errors_logged_ = 0;
};

}  // namespace rz::virtio
