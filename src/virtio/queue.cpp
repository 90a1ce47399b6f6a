#include "virtio/queue.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <string>

#include "util/error.h"
#include "virtio/virtio_defs.h"

namespace rz::virtio {

using memory::GuestMemory;

// Virtio 1.x rings are little-endian; so is every host ringzero runs on.
static_assert(std::endian::native == std::endian::little,
              "the virtqueue code reads little-endian ring fields natively");

namespace {

// One descriptor table entry as the guest lays it out.
struct RawDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(RawDesc) == kDescSize);

struct RawUsedElem {
  uint32_t id;
  uint32_t len;
};
static_assert(sizeof(RawUsedElem) == kUsedElemSize);

// 16-bit ring fields the guest reads or writes concurrently are accessed
// atomically, so the compiler neither tears nor repeats the access. A field
// whose host address is misaligned (only possible on an invalid queue or a
// region at an odd address) falls back to a byte copy plus a fence.
std::optional<uint16_t> load_u16(const GuestMemory& mem, uint64_t gpa, std::memory_order order) {
  uint8_t* p = mem.host_ptr(gpa, sizeof(uint16_t));
  if (p == nullptr) return std::nullopt;
  if (reinterpret_cast<uintptr_t>(p) % alignof(uint16_t) == 0) {
    return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(p)).load(order);
  }
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  std::atomic_thread_fence(order);
  return v;
}

bool store_u16(const GuestMemory& mem, uint64_t gpa, uint16_t v, std::memory_order order) {
  uint8_t* p = mem.host_ptr(gpa, sizeof(uint16_t));
  if (p == nullptr) return false;
  if (reinterpret_cast<uintptr_t>(p) % alignof(uint16_t) == 0) {
    std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(p)).store(v, order);
    return true;
  }
  std::atomic_thread_fence(order);
  std::memcpy(p, &v, sizeof(v));
  return true;
}

bool is_power_of_2(uint32_t n) { return n != 0 && (n & (n - 1)) == 0; }

// [gpa, gpa+len) lies in one region of `mem` and gpa is `align`-aligned.
bool area_ok(const GuestMemory& mem, uint64_t gpa, uint64_t len, uint64_t align) {
  return gpa % align == 0 && mem.host_ptr(gpa, len) != nullptr;
}

}  // namespace

const char* to_string(ChainError e) {
  switch (e) {
    case ChainError::kNone: return "no error";
    case ChainError::kDescriptorUnreadable: return "descriptor table entry outside guest memory";
    case ChainError::kIndexOutOfRange: return "descriptor index out of range";
    case ChainError::kChainTooLong: return "descriptor chain longer than its table (loop)";
    case ChainError::kBufferOutOfRange: return "buffer outside guest memory";
    case ChainError::kReadableAfterWritable:
      return "device-readable descriptor after a device-writable one";
    case ChainError::kTotalLengthTooLarge: return "descriptor chain total length too large";
    case ChainError::kIndirectNotNegotiated:
      return "indirect descriptor without VIRTIO_F_INDIRECT_DESC";
    case ChainError::kIndirectWithNext: return "indirect descriptor with the NEXT flag";
    case ChainError::kIndirectBadLength:
      return "indirect table length zero or not a multiple of 16";
    case ChainError::kIndirectTooLarge: return "indirect table has too many entries";
    case ChainError::kIndirectTableOutOfRange: return "indirect table outside guest memory";
    case ChainError::kIndirectNested: return "indirect descriptor inside an indirect table";
  }
  return "unknown descriptor chain error";
}

const char* to_string(QueueError e) {
  switch (e) {
    case QueueError::kNone: return "no error";
    case QueueError::kRingInaccessible: return "virtqueue ring outside guest memory";
    case QueueError::kAvailIdxTooFar:
      return "available index more than the queue size ahead of the device";
    case QueueError::kHeadOutOfRange: return "available ring entry out of range";
  }
  return "unknown virtqueue error";
}

// --- DescriptorChain ---------------------------------------------------------

void DescriptorChain::copy_all_but_spilled(const DescriptorChain& o) {
  head_ = o.head_;
  error_ = o.error_;
  num_readable_ = o.num_readable_;
  readable_len_ = o.readable_len_;
  writable_len_ = o.writable_len_;
  count_ = o.count_;
  if (o.spilled_.empty()) std::memcpy(inline_, o.inline_, count_ * sizeof(Buffer));
}

DescriptorChain& DescriptorChain::operator=(const DescriptorChain& o) {
  if (this == &o) return *this;
  copy_all_but_spilled(o);
  spilled_ = o.spilled_;
  return *this;
}

DescriptorChain& DescriptorChain::operator=(DescriptorChain&& o) noexcept {
  if (this == &o) return *this;
  copy_all_but_spilled(o);
  spilled_ = std::move(o.spilled_);
  o.clear_buffers();
  return *this;
}

void DescriptorChain::push_buffer(const Buffer& b) {
  if (count_ < kInlineBuffers) {
    new (inline_data() + count_++) Buffer(b);
    return;
  }
  if (spilled_.empty()) spilled_.assign(inline_data(), inline_data() + kInlineBuffers);
  spilled_.push_back(b);
  ++count_;
}

void DescriptorChain::clear_buffers() {
  count_ = 0;
  spilled_.clear();
}

size_t DescriptorChain::read(const GuestMemory& mem, size_t offset,
                             std::span<uint8_t> dst) const {
  size_t done = 0;
  for (const Buffer& b : readable()) {
    if (done == dst.size()) break;
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    const size_t n = std::min<size_t>(b.len - offset, dst.size() - done);
    if (!mem.read(b.gpa + offset, dst.data() + done, n)) break;
    done += n;
    offset = 0;
  }
  return done;
}

size_t DescriptorChain::write(const GuestMemory& mem, size_t offset,
                              std::span<const uint8_t> src) const {
  size_t done = 0;
  for (const Buffer& b : writable()) {
    if (done == src.size()) break;
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    const size_t n = std::min<size_t>(b.len - offset, src.size() - done);
    if (!mem.write(b.gpa + offset, src.data() + done, n)) break;
    done += n;
    offset = 0;
  }
  return done;
}

// --- Queue -------------------------------------------------------------------

Queue::Queue(uint16_t max_size, QueueLimits limits)
    : max_size_(max_size), limits_(limits), size_(max_size) {
  if (!is_power_of_2(max_size) || max_size > kMaxQueueSize) {
    throw Error("virtqueue: maximum size " + std::to_string(max_size) +
                " is not a power of 2 in 1..32768");
  }
  if (limits.max_indirect_entries == 0 || limits.max_indirect_entries > 65536) {
    throw Error("virtqueue: max_indirect_entries must be in 1..65536");
  }
}

void Queue::set_features(uint64_t negotiated) {
  event_idx_ = (negotiated & feature_bit(kVirtioFEventIdx)) != 0;
  indirect_desc_ = (negotiated & feature_bit(kVirtioFIndirectDesc)) != 0;
}

bool Queue::is_valid(const GuestMemory& mem) const {
  if (!ready_ || !is_power_of_2(size_) || size_ > max_size_) return false;
  return area_ok(mem, desc_table_, desc_table_size(size_), kDescTableAlign) &&
         area_ok(mem, avail_ring_, avail_ring_size(size_), kAvailRingAlign) &&
         area_ok(mem, used_ring_, used_ring_size(size_), kUsedRingAlign);
}

void Queue::reset() {
  size_ = max_size_;
  ready_ = false;
  desc_table_ = avail_ring_ = used_ring_ = 0;
  event_idx_ = indirect_desc_ = false;
  next_avail_ = next_used_ = 0;
  signalled_used_.reset();
  notifications_enabled_ = true;
  error_ = QueueError::kNone;
}

bool Queue::usable() const {
  return ready_ && is_power_of_2(size_) && size_ <= max_size_;
}

void Queue::set_broken(QueueError e) {
  if (error_ == QueueError::kNone) error_ = e;
}

std::optional<uint16_t> Queue::load_avail_idx(const GuestMemory& mem) const {
  // Acquire: the ring entries and descriptors the driver wrote before
  // publishing this index are read after it.
  return load_u16(mem, avail_ring_ + kAvailIdxOffset, std::memory_order_acquire);
}

bool Queue::publish_avail_event(const GuestMemory& mem) {
  return store_u16(mem, used_ring_ + avail_event_offset(size_), next_avail_,
                   std::memory_order_relaxed);
}

std::optional<DescriptorChain> Queue::pop(const GuestMemory& mem) {
  // One result object, returned on every path, so that the chain is built
  // in the caller's storage (named return value) rather than copied there.
  std::optional<DescriptorChain> out;
  if (!usable() || broken()) return out;

  auto avail_idx = load_avail_idx(mem);
  if (!avail_idx) {
    set_broken(QueueError::kRingInaccessible);
    return out;
  }
  if (*avail_idx == next_avail_ && event_idx_ && notifications_enabled_) {
    // Empty: ask to be notified about the next entry, then look once more,
    // in case the driver added it before it could see the new avail_event.
    if (!publish_avail_event(mem)) {
      set_broken(QueueError::kRingInaccessible);
      return out;
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
    avail_idx = load_avail_idx(mem);
    if (!avail_idx) {
      set_broken(QueueError::kRingInaccessible);
      return out;
    }
  }
  const uint16_t pending = static_cast<uint16_t>(*avail_idx - next_avail_);
  if (pending == 0) return out;
  if (pending > size_) {
    set_broken(QueueError::kAvailIdxTooFar);
    return out;
  }

  const uint64_t slot = next_avail_ & (size_ - 1u);
  auto head = load_u16(mem, avail_ring_ + kAvailRingOffset + 2 * slot, std::memory_order_relaxed);
  if (!head) {
    set_broken(QueueError::kRingInaccessible);
    return out;
  }
  if (*head >= size_) {
    set_broken(QueueError::kHeadOutOfRange);
    return out;
  }
  ++next_avail_;
  parse_chain(mem, *head, out.emplace());
  return out;
}

void Queue::parse_chain(const GuestMemory& mem, uint16_t head, DescriptorChain& chain) const {
  chain.head_ = head;
  uint64_t total = 0;  // at most (size + indirect entries) * 2^32: no overflow
  bool seen_writable = false;

  // Validates one buffer descriptor and appends it to the chain.
  auto add = [&](const RawDesc& d) {
    const bool writable = (d.flags & kVirtqDescFWrite) != 0;
    if (writable) {
      seen_writable = true;
    } else if (seen_writable) {
      return ChainError::kReadableAfterWritable;
    }
    total += d.len;
    if (total > limits_.max_chain_bytes) return ChainError::kTotalLengthTooLarge;
    if (d.len == 0) return ChainError::kNone;  // no bytes, nothing to map
    if (d.addr + d.len < d.addr) return ChainError::kBufferOutOfRange;  // wraps 2^64
    auto host = mem.slice(d.addr, d.len);
    if (!host) return ChainError::kBufferOutOfRange;
    chain.push_buffer(Buffer{d.addr, d.len, writable, *host});
    if (writable) {
      chain.writable_len_ += d.len;
    } else {
      chain.readable_len_ += d.len;
      ++chain.num_readable_;
    }
    return ChainError::kNone;
  };
  // A rejected chain keeps its head and nothing else.
  auto fail = [&chain](ChainError e) {
    chain.error_ = e;
    chain.clear_buffers();
    chain.num_readable_ = chain.readable_len_ = chain.writable_len_ = 0;
  };

  // The direct part: at most size_ descriptors, so a `next` loop ends here.
  uint16_t idx = head;
  for (uint32_t count = 1;; ++count) {
    if (count > size_) return fail(ChainError::kChainTooLong);
    RawDesc d;
    if (!mem.read(desc_table_ + kDescSize * idx, &d, sizeof(d))) {
      return fail(ChainError::kDescriptorUnreadable);
    }

    if (d.flags & kVirtqDescFIndirect) {
      // The last descriptor of the chain refers to a table of further
      // descriptors. Its own WRITE flag is meaningless and ignored.
      if (!indirect_desc_) return fail(ChainError::kIndirectNotNegotiated);
      if (d.flags & kVirtqDescFNext) return fail(ChainError::kIndirectWithNext);
      if (d.len == 0 || d.len % kDescSize != 0) return fail(ChainError::kIndirectBadLength);
      const uint32_t entries = d.len / kDescSize;
      if (entries > limits_.max_indirect_entries) return fail(ChainError::kIndirectTooLarge);
      auto table = mem.slice(d.addr, d.len);
      if (!table) return fail(ChainError::kIndirectTableOutOfRange);

      uint32_t i = 0;
      for (uint32_t icount = 1;; ++icount) {
        if (icount > entries) return fail(ChainError::kChainTooLong);
        RawDesc e;  // copied once: the guest may rewrite the table meanwhile
        std::memcpy(&e, table->data() + kDescSize * i, sizeof(e));
        if (e.flags & kVirtqDescFIndirect) return fail(ChainError::kIndirectNested);
        if (ChainError err = add(e); err != ChainError::kNone) return fail(err);
        if (!(e.flags & kVirtqDescFNext)) break;
        if (e.next >= entries) return fail(ChainError::kIndexOutOfRange);
        i = e.next;
      }
      break;
    }

    if (ChainError err = add(d); err != ChainError::kNone) return fail(err);
    if (!(d.flags & kVirtqDescFNext)) break;
    if (d.next >= size_) return fail(ChainError::kIndexOutOfRange);
    idx = d.next;
  }
}

bool Queue::add_used(const GuestMemory& mem, uint16_t head, uint32_t len) {
  if (!usable() || head >= size_) return false;
  const uint64_t slot = next_used_ & (size_ - 1u);
  const RawUsedElem elem{head, len};
  if (!mem.write(used_ring_ + kUsedRingOffset + kUsedElemSize * slot, &elem, sizeof(elem))) {
    set_broken(QueueError::kRingInaccessible);
    return false;
  }
  // Release: the element (and the data the device wrote into the buffers)
  // is visible to the driver before the index that exposes it.
  if (!store_u16(mem, used_ring_ + kUsedIdxOffset, static_cast<uint16_t>(next_used_ + 1),
                 std::memory_order_release)) {
    set_broken(QueueError::kRingInaccessible);
    return false;
  }
  ++next_used_;
  return true;
}

bool Queue::needs_notification(const GuestMemory& mem) {
  if (!usable()) return false;
  // The used->idx store must be globally visible before the driver's
  // suppression fields are read; the driver does the mirror image.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (event_idx_) {
    const uint16_t new_idx = next_used_;
    const std::optional<uint16_t> old_idx = signalled_used_;
    signalled_used_ = new_idx;
    if (!old_idx) return true;
    auto used_event =
        load_u16(mem, avail_ring_ + used_event_offset(size_), std::memory_order_relaxed);
    if (!used_event) return true;  // cannot tell: a spurious interrupt is harmless
    return vring_need_event(*used_event, new_idx, *old_idx);
  }
  auto flags = load_u16(mem, avail_ring_ + kAvailFlagsOffset, std::memory_order_relaxed);
  if (!flags) return true;
  return (*flags & kVirtqAvailFNoInterrupt) == 0;
}

void Queue::disable_notifications(const GuestMemory& mem) {
  notifications_enabled_ = false;
  if (!usable() || event_idx_) return;  // with EVENT_IDX, used->flags stays 0
  store_u16(mem, used_ring_ + kUsedFlagsOffset, kVirtqUsedFNoNotify, std::memory_order_relaxed);
}

bool Queue::enable_notifications(const GuestMemory& mem) {
  notifications_enabled_ = true;
  if (!usable() || broken()) return false;
  const bool stored =
      event_idx_ ? publish_avail_event(mem)
                 : store_u16(mem, used_ring_ + kUsedFlagsOffset, 0, std::memory_order_relaxed);
  if (!stored) {
    set_broken(QueueError::kRingInaccessible);
    return false;
  }
  // Our store must be visible before we re-read avail->idx: either we see
  // the driver's new entry or the driver sees that we want a notification.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  auto avail_idx = load_avail_idx(mem);
  if (!avail_idx) {
    set_broken(QueueError::kRingInaccessible);
    return false;
  }
  return *avail_idx != next_avail_;
}

bool Queue::set_avail_event(const GuestMemory& mem, uint16_t idx) {
  if (!usable()) return false;
  return store_u16(mem, used_ring_ + avail_event_offset(size_), idx, std::memory_order_relaxed);
}

}  // namespace rz::virtio
