// The device side of a virtio split virtqueue (virtio 1.2, section 2.7),
// independent of the transport that configures it.
//
// Everything in the three rings and in the descriptors is written by the
// guest and is untrusted. The queue reads each descriptor exactly once into a
// local copy, validates it, and turns a malformed chain into a DescriptorChain
// that carries an error instead of buffers; every loop is bounded by the queue
// size or by QueueLimits. Nothing here throws because of what the guest wrote:
// exceptions (rz::Error) only report a bad construction-time configuration.
//
// Typical device loop (the transport calls it on a queue notification):
//
//   do {
//     q.disable_notifications(mem);
//     while (auto chain = q.pop(mem)) {
//       uint32_t written = 0;
//       if (chain->ok()) written = serve(*chain);   // reads/writes its buffers
//       q.add_used(mem, chain->head(), written);    // a bad chain: len 0
//     }
//     if (q.broken()) { set DEVICE_NEEDS_RESET; break; }
//   } while (q.enable_notifications(mem));
//   if (q.needs_notification(mem)) irq.raise();
//
// A device may also skip the disable/enable pair and just pop until empty:
// with VIRTIO_F_EVENT_IDX, pop() itself re-arms avail_event when it finds the
// ring empty (and re-checks, so a buffer added meanwhile is not missed).
//
// Two kinds of guest error:
//  - A malformed chain (bad index, loop, buffer outside RAM, ...): pop()
//    consumes its head and returns a DescriptorChain with ok() == false and no
//    buffers. The device should not touch the chain's memory, and should
//    complete it with add_used(head, 0) so the driver gets its descriptors
//    back; the queue keeps working.
//  - A broken queue (the available index is more than Queue Size ahead, an
//    available ring entry is not a descriptor index, the rings are not in
//    guest memory): nothing sensible can be returned to the driver. broken()
//    becomes true, pop() returns nothing until reset(), and the device should
//    set DEVICE_NEEDS_RESET in its status and send a configuration change
//    notification.
//
// Not thread-safe: one thread at a time drives a Queue (the transport's
// configuration writes and the device's pop/add_used must be serialized by
// the owner). The guest runs concurrently; ordering against it is done with
// the fences the spec asks for.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "memory/guest_memory.h"

namespace rz::virtio {

// Why a descriptor chain was rejected.
enum class ChainError : uint8_t {
  kNone = 0,
  kDescriptorUnreadable,     // a descriptor table entry is not in guest memory
  kIndexOutOfRange,          // `next` >= queue size (or >= indirect table entries)
  kChainTooLong,             // more descriptors than the table holds: a `next` loop
  kBufferOutOfRange,         // [addr, addr+len) not inside one guest memory region
  kReadableAfterWritable,    // a device-readable buffer follows a device-writable one
  kTotalLengthTooLarge,      // sum of the buffer lengths exceeds QueueLimits::max_chain_bytes
  kIndirectNotNegotiated,    // VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC
  kIndirectWithNext,         // VIRTQ_DESC_F_INDIRECT together with VIRTQ_DESC_F_NEXT
  kIndirectBadLength,        // table length 0 or not a multiple of 16
  kIndirectTooLarge,         // more entries than QueueLimits::max_indirect_entries
  kIndirectTableOutOfRange,  // the table itself is not inside one guest memory region
  kIndirectNested,           // VIRTQ_DESC_F_INDIRECT inside an indirect table
};
const char* to_string(ChainError e);

// Why a queue stopped working (see the header comment).
enum class QueueError : uint8_t {
  kNone = 0,
  kRingInaccessible,   // avail or used ring fields are not in guest memory
  kAvailIdxTooFar,     // avail->idx is more than Queue Size ahead of the device
  kHeadOutOfRange,     // an available ring entry is >= Queue Size
};
const char* to_string(QueueError e);

// One guest buffer of a validated chain. `host` covers exactly the `len`
// bytes at `gpa` in the host mapping of guest memory; it stays valid as long
// as the GuestMemory the chain was popped from is alive and not remapped.
// The guest can change those bytes at any time: copy what you parse.
struct Buffer {
  uint64_t gpa = 0;
  uint32_t len = 0;
  bool writable = false;  // device-writable (VIRTQ_DESC_F_WRITE)
  std::span<uint8_t> host;
};

// A descriptor chain taken from the available ring. If ok(), its buffers are
// all in guest memory, readable ones first, and their total length fits in
// 32 bits. Zero-length descriptors carry no bytes and are left out.
class DescriptorChain {
 public:
  // User-provided (not "= default"), so that value-initialization such as
  // optional::emplace() does not zero the whole inline storage first.
  DescriptorChain() {}  // NOLINT(modernize-use-equals-default)
  // Copies only the buffers in use (the inline storage is left uninitialized
  // past them, so that popping a chain does not clear it).
  DescriptorChain(const DescriptorChain& o) { *this = o; }
  DescriptorChain(DescriptorChain&& o) noexcept { *this = std::move(o); }
  DescriptorChain& operator=(const DescriptorChain& o);
  DescriptorChain& operator=(DescriptorChain&& o) noexcept;
  ~DescriptorChain() = default;

  // The chain's head descriptor index: what add_used() wants back.
  uint16_t head() const { return head_; }
  bool ok() const { return error_ == ChainError::kNone; }
  ChainError error() const { return error_; }
  const char* error_message() const { return to_string(error_); }

  // All buffers in chain order, then the device-readable and the
  // device-writable ones (empty when !ok()).
  std::span<const Buffer> buffers() const {
    return spilled_.empty() ? std::span<const Buffer>(inline_data(), count_)
                            : std::span<const Buffer>(spilled_);
  }
  std::span<const Buffer> readable() const { return buffers().first(num_readable_); }
  std::span<const Buffer> writable() const { return buffers().subspan(num_readable_); }
  uint32_t readable_len() const { return readable_len_; }
  uint32_t writable_len() const { return writable_len_; }

  // Copies bytes out of the device-readable buffers, seen as one contiguous
  // stream, starting `offset` bytes into it. Returns the number of bytes
  // copied: less than dst.size() when the stream ends first.
  size_t read(const memory::GuestMemory& mem, size_t offset, std::span<uint8_t> dst) const;
  // Copies bytes into the device-writable buffers, seen as one stream,
  // starting `offset` bytes into it. Returns the number of bytes written.
  size_t write(const memory::GuestMemory& mem, size_t offset,
               std::span<const uint8_t> src) const;

 private:
  friend class Queue;
  uint16_t head_ = 0;
  ChainError error_ = ChainError::kNone;
  uint32_t num_readable_ = 0;
  uint32_t readable_len_ = 0;
  uint32_t writable_len_ = 0;
  // Buffers live in inline_ while they fit (a block request has 3, a packet
  // 1 or 2), so popping a chain allocates nothing; a longer chain moves them
  // all to spilled_.
  static constexpr uint32_t kInlineBuffers = 8;
  void push_buffer(const Buffer& b);
  void copy_all_but_spilled(const DescriptorChain& o);
  void clear_buffers();
  static_assert(std::is_trivially_copyable_v<Buffer> && std::is_trivially_destructible_v<Buffer>);
  Buffer* inline_data() { return std::launder(reinterpret_cast<Buffer*>(inline_)); }
  const Buffer* inline_data() const {
    return std::launder(reinterpret_cast<const Buffer*>(inline_));
  }
  uint32_t count_ = 0;
  alignas(Buffer) unsigned char inline_[kInlineBuffers * sizeof(Buffer)];
  std::vector<Buffer> spilled_;
};

// Bounds on what one chain may describe (beyond the spec's own rules).
struct QueueLimits {
  // Entries in one indirect descriptor table; a table may hold more entries
  // than the queue has (Linux sizes them by the request's segment count).
  uint32_t max_indirect_entries = 1024;
  // Sum of the lengths of a chain's buffers. The spec caps it at 2^32 - 1.
  uint32_t max_chain_bytes = UINT32_MAX;
};

// vring_need_event(): true if moving the used (or avail) index from `old_idx`
// to `new_idx` crossed `event_idx`, i.e. event_idx is in [old_idx, new_idx)
// on the wrapping 16-bit axis. That is when the other side asked to be told.
constexpr bool vring_need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx) {
  return static_cast<uint16_t>(new_idx - event_idx - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

class Queue {
 public:
  // `max_size`: the largest Queue Size the device offers (a power of 2, at
  // most 32768). Throws rz::Error if it or `limits` is invalid.
  explicit Queue(uint16_t max_size = 256, QueueLimits limits = {});

  // --- Configuration, as the driver writes it through the transport -------
  uint16_t max_size() const { return max_size_; }
  const QueueLimits& limits() const { return limits_; }
  // Queue Size; reads as max_size() after reset. Any value is stored;
  // is_valid() says whether it is usable.
  uint16_t size() const { return size_; }
  void set_size(uint16_t n) { size_ = n; }
  bool ready() const { return ready_; }
  void set_ready(bool r) { ready_ = r; }
  // Guest physical addresses of the descriptor table ("descriptor area"),
  // the available ring ("driver area") and the used ring ("device area").
  uint64_t desc_table() const { return desc_table_; }
  void set_desc_table(uint64_t gpa) { desc_table_ = gpa; }
  uint64_t avail_ring() const { return avail_ring_; }
  void set_avail_ring(uint64_t gpa) { avail_ring_ = gpa; }
  uint64_t used_ring() const { return used_ring_; }
  void set_used_ring(uint64_t gpa) { used_ring_ = gpa; }
  // Negotiated ring features: VIRTIO_F_EVENT_IDX and VIRTIO_F_INDIRECT_DESC.
  bool event_idx() const { return event_idx_; }
  void set_event_idx(bool on) { event_idx_ = on; }
  bool indirect_desc() const { return indirect_desc_; }
  void set_indirect_desc(bool on) { indirect_desc_ = on; }
  // Takes both ring features from the negotiated feature bits.
  void set_features(uint64_t negotiated);

  // True if the queue is ready, its size is a power of 2 no larger than
  // max_size(), and each of the three areas is aligned as the spec requires
  // (16, 2, 4) and lies inside one region of `mem`. Check it when the driver
  // enables the queue or sets DRIVER_OK; a device must not use an invalid
  // queue (pop() on one returns nothing or marks it broken, safely).
  bool is_valid(const memory::GuestMemory& mem) const;

  // Back to the state after construction: not ready, size max_size(),
  // addresses 0, features off, indices 0, not broken.
  void reset();

  // --- Device side ----------------------------------------------------------
  // Takes the next available chain, or nullopt if there is none, the queue
  // is not ready or has an unusable size, or it is broken. A returned chain
  // may carry an error (see the header comment); its head is consumed
  // either way.
  std::optional<DescriptorChain> pop(const memory::GuestMemory& mem);
  // Puts the last popped chain back (for a device that found it cannot use
  // it yet, e.g. a receive buffer that is too small). Only right after pop().
  void undo_pop() { --next_avail_; }

  // Returns chain `head` to the driver with `len` bytes written into its
  // device-writable buffers: writes the used element, then (release) used->idx.
  // Returns false and changes nothing if the queue is not usable or `head`
  // is not below size(); false with broken() set if the used ring is not in
  // guest memory.
  bool add_used(const memory::GuestMemory& mem, uint16_t head, uint32_t len);

  // After add_used(): whether the driver wants a used buffer notification
  // now. Without EVENT_IDX: unless the driver set VIRTQ_AVAIL_F_NO_INTERRUPT.
  // With EVENT_IDX: if used->idx passed used_event since the previous call
  // (the first call after reset always says yes). Each call moves that
  // "previous" mark, so send the notification when it returns true.
  bool needs_notification(const memory::GuestMemory& mem);

  // Asks the driver not to send available buffer notifications while the
  // device is busy: VIRTQ_USED_F_NO_NOTIFY without EVENT_IDX; with EVENT_IDX
  // avail_event is simply no longer advanced.
  void disable_notifications(const memory::GuestMemory& mem);
  // Asks for notifications again (clears the flag, or publishes avail_event =
  // the next index the device will read) and then re-reads avail->idx.
  // Returns true if buffers arrived meanwhile: pop them, or they may wait
  // for a notification that never comes.
  bool enable_notifications(const memory::GuestMemory& mem);
  // Writes avail_event directly (EVENT_IDX only). False if the queue is not
  // usable or the used ring is not in guest memory.
  bool set_avail_event(const memory::GuestMemory& mem, uint16_t idx);

  // Broken-queue state (see the header comment); cleared by reset().
  bool broken() const { return error_ != QueueError::kNone; }
  QueueError error() const { return error_; }
  const char* error_message() const { return to_string(error_); }

  // The device's own ring positions (free-running 16-bit indices), for
  // diagnostics and for saving/restoring a running queue.
  uint16_t next_avail() const { return next_avail_; }
  void set_next_avail(uint16_t idx) { next_avail_ = idx; }
  uint16_t next_used() const { return next_used_; }
  void set_next_used(uint16_t idx) { next_used_ = idx; }

 private:
  bool usable() const;
  void set_broken(QueueError e);
  void parse_chain(const memory::GuestMemory& mem, uint16_t head, DescriptorChain& chain) const;
  std::optional<uint16_t> load_avail_idx(const memory::GuestMemory& mem) const;
  bool publish_avail_event(const memory::GuestMemory& mem);

  uint16_t max_size_;
  QueueLimits limits_;

  uint16_t size_;
  bool ready_ = false;
  uint64_t desc_table_ = 0;
  uint64_t avail_ring_ = 0;
  uint64_t used_ring_ = 0;
  bool event_idx_ = false;
  bool indirect_desc_ = false;

  uint16_t next_avail_ = 0;
  uint16_t next_used_ = 0;
  // used->idx when needs_notification() last ran (EVENT_IDX), if it has.
  std::optional<uint16_t> signalled_used_;
  bool notifications_enabled_ = true;
  QueueError error_ = QueueError::kNone;
};

}  // namespace rz::virtio
