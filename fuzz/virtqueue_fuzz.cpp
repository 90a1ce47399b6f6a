// libFuzzer target for the split virtqueue (src/virtio/queue.h).
//
// The input is a hostile guest: a header choosing the queue configuration,
// then the contents of 64 KiB of guest memory (two 32 KiB regions, so
// buffers can straddle a region border). The target pops chains until the
// queue is empty or broken, reads and writes through each valid chain,
// completes it and asks whether to notify, checking the queue's promises
// along the way. Any crash, sanitizer report, leak or hang is a bug.
//
// Input layout (little-endian, missing bytes read as 0):
//   0  u8  cfg    bits 0-3: log2 Queue Size; bit 4: use raw_size instead;
//                 bits 5-7: log2 max size offered (max_size = 1 << (5 + v))
//   1  u8  feat   bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, bit 2 tight limits,
//                 bit 3 skip invalid queues, bit 4 start with notifications
//                 disabled, bit 5 undo the first pop, bit 6 ready = false,
//                 bit 7 reset the queue at the end and check it is idle
//   2  u16 raw_size
//   4  u16 next_avail   6 u16 next_used
//   8  u64 desc_table  16 u64 avail_ring  24 u64 used_ring
//  32  u32 rw_offset (bits 0-15: stream offset, 16-31: chunk size)
//  36  u32 actions (two bits consumed per chain, rotating)
//  40  guest memory image (up to 64 KiB)
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "memory/guest_memory.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"

namespace {

using rz::memory::GuestMemory;
using rz::virtio::ChainError;
using rz::virtio::DescriptorChain;
using rz::virtio::Queue;
using rz::virtio::QueueLimits;

constexpr uint64_t kRegionSize = 0x8000;
constexpr uint64_t kMemSize = 2 * kRegionSize;
constexpr size_t kHeaderSize = 40;
constexpr int kMaxPops = 1024;  // the guest can make the ring refill itself
constexpr size_t kMaxCopy = 4096;  // bytes read and written per chain
constexpr int kMaxCalls = 32;      // read() or write() calls per chain

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      __builtin_printf("virtqueue_fuzz: check failed: %s (line %d)\n", \
                       #cond, __LINE__);                                \
      std::abort();                                                     \
    }                                                                   \
  } while (0)

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  template <typename T>
  T get(size_t off) const {
    T v{};
    if (off < size_) std::memcpy(&v, data_ + off, std::min(sizeof(T), size_ - off));
    return v;
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

// The promises a popped chain makes to a device.
void check_chain(const GuestMemory& mem, const Queue& q, const DescriptorChain& c) {
  CHECK(c.head() < q.size());
  if (!c.ok()) {
    CHECK(c.buffers().empty());
    CHECK(c.readable_len() == 0 && c.writable_len() == 0);
    CHECK(c.error_message() != nullptr);
    return;
  }
  uint64_t readable = 0, writable = 0;
  bool seen_writable = false;
  for (const auto& b : c.buffers()) {
    CHECK(b.len > 0);
    CHECK(b.host.size() == b.len);
    CHECK(b.host.data() == mem.host_ptr(b.gpa, b.len));
    if (b.writable) {
      seen_writable = true;
      writable += b.len;
    } else {
      CHECK(!seen_writable);
      readable += b.len;
    }
  }
  CHECK(readable + writable <= q.limits().max_chain_bytes);
  CHECK(readable == c.readable_len() && writable == c.writable_len());
  CHECK(c.readable().size() + c.writable().size() == c.buffers().size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // One guest, reused: each run overwrites all of it.
  static GuestMemory mem = GuestMemory::create({{0, kRegionSize}, {kRegionSize, kRegionSize}});
  static std::vector<uint8_t> scratch(kMaxCopy);

  const Reader in(data, size);
  const uint8_t cfg = in.get<uint8_t>(0);
  const uint8_t feat = in.get<uint8_t>(1);
  const size_t image = size > kHeaderSize ? std::min<size_t>(size - kHeaderSize, kMemSize) : 0;
  for (const auto& r : mem.regions()) std::memset(r.host, 0, r.size);
  if (image != 0) CHECK(mem.write(0, data + kHeaderSize, std::min<size_t>(image, kRegionSize)));
  if (image > kRegionSize) CHECK(mem.write(kRegionSize, data + kHeaderSize + kRegionSize, image - kRegionSize));

  const uint16_t max_size = static_cast<uint16_t>(1u << (5 + (cfg >> 5)));  // 32..4096
  QueueLimits limits;
  if (feat & 4) limits = QueueLimits{8, 4096};
  Queue q(max_size, limits);
  q.set_size((cfg & 0x10) ? in.get<uint16_t>(2) : static_cast<uint16_t>(1u << (cfg & 15)));
  q.set_desc_table(in.get<uint64_t>(8));
  q.set_avail_ring(in.get<uint64_t>(16));
  q.set_used_ring(in.get<uint64_t>(24));
  q.set_features(((feat & 1) ? rz::virtio::feature_bit(rz::virtio::kVirtioFEventIdx) : 0) |
                 ((feat & 2) ? rz::virtio::feature_bit(rz::virtio::kVirtioFIndirectDesc) : 0));
  q.set_next_avail(in.get<uint16_t>(4));
  q.set_next_used(in.get<uint16_t>(6));
  q.set_ready(!(feat & 0x40));
  if ((feat & 8) && !q.is_valid(mem)) return 0;
  if (feat & 0x10) q.disable_notifications(mem);

  const uint32_t rw_offset = in.get<uint32_t>(32);
  uint32_t actions = in.get<uint32_t>(36);
  bool undo = feat & 0x20;

  for (int pops = 0; pops < kMaxPops; ++pops) {
    auto chain = q.pop(mem);
    if (!chain) {
      if (q.broken()) {
        CHECK(!q.pop(mem));  // stays broken
        break;
      }
      // Empty: re-enable notifications, as a device would, and go on if
      // buffers showed up (they can: used-ring writes may land in the
      // available ring).
      if (!q.enable_notifications(mem)) break;
      continue;
    }
    if (undo) {
      undo = false;
      q.undo_pop();
      auto again = q.pop(mem);
      CHECK(again && again->head() == chain->head() && again->error() == chain->error());
    }
    check_chain(mem, q, *chain);

    uint32_t written = 0;
    if (chain->ok()) {
      // Copy the readable stream out in chunks from some offset, then back
      // into the writable stream, the way a device moves a request's bytes.
      const size_t chunk = 1 + (rw_offset >> 16) % 97;
      size_t off = (rw_offset & 0xffff) % (chain->readable_len() + 1);
      size_t got = 0;
      for (int calls = 0; calls < kMaxCalls && got < kMaxCopy; ++calls) {
        const size_t want = std::min(chunk, kMaxCopy - got);
        const size_t n = chain->read(mem, off, std::span<uint8_t>(scratch.data() + got, want));
        CHECK(n == std::min<size_t>(want, chain->readable_len() - off));
        got += n;
        off += n;
        if (n < want) break;
      }
      size_t woff = (rw_offset & 0xffff) % (chain->writable_len() + 1);
      for (size_t put = 0, calls = 0; put < got && calls < kMaxCalls; ++calls) {
        const size_t want = std::min(chunk, got - put);
        const size_t n = chain->write(mem, woff, std::span<const uint8_t>(scratch.data() + put, want));
        CHECK(n == std::min<size_t>(want, chain->writable_len() - woff));
        put += n;
        woff += n;
        if (n < want) break;
      }
      written = static_cast<uint32_t>(woff);
    }
    const uint32_t action = actions & 3;
    actions = (actions >> 2) | (action << 30);
    if (action == 3) continue;  // the device keeps this one (never completes it)
    CHECK(q.add_used(mem, chain->head(), written) || q.broken());
    if (action == 1) (void)q.needs_notification(mem);
    if (action == 2) {
      q.disable_notifications(mem);
      (void)q.set_avail_event(mem, q.next_avail());
    }
  }
  (void)q.needs_notification(mem);
  CHECK(q.error_message() != nullptr);
  if (feat & 0x80) {
    q.reset();
    CHECK(!q.broken() && !q.ready() && q.next_avail() == 0 && q.next_used() == 0);
    CHECK(!q.pop(mem));
  }
  return 0;
}
