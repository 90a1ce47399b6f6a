// Test helpers for virtio device unit tests: the driver's half of a split
// virtqueue written straight into a mock guest's memory, and an Interrupt
// that counts notifications. Header-only; shared by the virtio device tests
// (rng, blk, net, vsock, pci transport). Keep the interface stable: add, do
// not change.
//
// Typical use:
//
//   auto mem = GuestMemory::create({{0, 1 << 20}});
//   test::QueueDriver drv(mem, /*size=*/16, /*ring_gpa=*/0x1000,
//                         /*data_gpa=*/0x10000, /*data_size=*/0x40000);
//   Queue q(256);
//   drv.configure(q);                                  // size, addresses, ready
//   uint64_t buf = drv.alloc(512);
//   uint16_t head = drv.add_chain({{hdr, 16, false}, {buf, 512, true}});
//   device.process_queue(0);
//   auto used = drv.pop_used();                        // {id, len}
//   auto bytes = drv.read_bytes(buf, used->len);
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "memory/guest_memory.h"
#include "virtio/device.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"

namespace rz::virtio::test {

// One buffer of a chain, as the driver describes it.
struct Seg {
  uint64_t gpa = 0;
  uint32_t len = 0;
  bool writable = false;  // device-writable (VIRTQ_DESC_F_WRITE)
};

// An entry of the used ring.
struct UsedElem {
  uint32_t id = 0;
  uint32_t len = 0;
};

// Counts notifications; thread-safe.
class FakeInterrupt : public Interrupt {
 public:
  void notify_queue(uint16_t queue_index) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++per_queue_[queue_index];
    ++queue_total_;
  }
  void notify_config() override { ++config_; }
  void notify_needs_reset(const char* /*why*/) override { ++needs_reset_; }
  uint64_t needs_reset_count() const { return needs_reset_.load(); }

  uint64_t queue_count(uint16_t q) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = per_queue_.find(q);
    return it == per_queue_.end() ? 0 : it->second;
  }
  uint64_t queue_total() const {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_total_;
  }
  uint64_t config_count() const { return config_.load(); }

 private:
  mutable std::mutex mu_;
  std::map<uint16_t, uint64_t> per_queue_;
  uint64_t queue_total_ = 0;
  std::atomic<uint64_t> config_{0};
  std::atomic<uint64_t> needs_reset_{0};
};

// The driver side of one split virtqueue. The descriptor table, available
// ring and used ring are laid out from `ring_gpa` (desc at ring_gpa, avail
// right after it, used at the next 4-aligned address after avail). Data
// buffers come from a bump allocator over [data_gpa, data_gpa + data_size).
// Failures (out of descriptors, bad addresses) throw std::runtime_error so
// a test fails loudly instead of silently writing nowhere.
class QueueDriver {
 public:
  QueueDriver(const memory::GuestMemory& mem, uint16_t size, uint64_t ring_gpa,
              uint64_t data_gpa = 0, uint64_t data_size = 0)
      : mem_(mem), size_(size), desc_gpa_(ring_gpa),
        avail_gpa_(ring_gpa + desc_table_size(size)),
        used_gpa_((avail_gpa_ + avail_ring_size(size) + 3) & ~uint64_t{3}),
        data_gpa_(data_gpa), data_end_(data_gpa + data_size), data_next_(data_gpa) {
    // Start from zeroed rings.
    std::vector<uint8_t> zero(ring_bytes(), 0);
    check(mem_.write(desc_gpa_, zero.data(), zero.size()), "ring area not in guest memory");
    for (uint16_t i = 0; i < size_; ++i) free_.push_back(static_cast<uint16_t>(size_ - 1 - i));
  }

  uint16_t size() const { return size_; }
  uint64_t desc_gpa() const { return desc_gpa_; }
  uint64_t avail_gpa() const { return avail_gpa_; }
  uint64_t used_gpa() const { return used_gpa_; }
  // Bytes from ring_gpa to the end of the used ring.
  uint64_t ring_bytes() const { return used_gpa_ + used_ring_size(size_) - desc_gpa_; }

  // Programs a device-side Queue the way a transport would (size, the three
  // addresses, ready). Features are left to the caller (Queue::set_features).
  void configure(Queue& q) const {
    q.set_size(size_);
    q.set_desc_table(desc_gpa_);
    q.set_avail_ring(avail_gpa_);
    q.set_used_ring(used_gpa_);
    q.set_ready(true);
  }

  // --- Data area -------------------------------------------------------------
  uint64_t alloc(uint64_t len, uint64_t align = 16) {
    uint64_t gpa = (data_next_ + align - 1) & ~(align - 1);
    check(gpa + len <= data_end_, "QueueDriver data area exhausted");
    data_next_ = gpa + len;
    return gpa;
  }
  void reset_alloc() { data_next_ = data_gpa_; }
  // Allocates and fills a buffer.
  uint64_t alloc_bytes(const std::vector<uint8_t>& bytes, uint64_t align = 16) {
    uint64_t gpa = alloc(bytes.size(), align);
    write_bytes(gpa, bytes);
    return gpa;
  }
  void write_bytes(uint64_t gpa, const std::vector<uint8_t>& bytes) const {
    check(mem_.write(gpa, bytes.data(), bytes.size()), "write_bytes outside guest memory");
  }
  std::vector<uint8_t> read_bytes(uint64_t gpa, uint64_t len) const {
    std::vector<uint8_t> out(len);
    check(mem_.read(gpa, out.data(), len), "read_bytes outside guest memory");
    return out;
  }
  void fill(uint64_t gpa, uint64_t len, uint8_t value) const {
    write_bytes(gpa, std::vector<uint8_t>(len, value));
  }

  // --- Descriptors and the available ring -------------------------------------
  // Raw descriptor write into the queue's table.
  void desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags = 0, uint16_t next = 0) const {
    desc_at(desc_gpa_ + kDescSize * i, addr, len, flags, next);
  }
  // Raw descriptor write anywhere (e.g. an indirect table).
  void desc_at(uint64_t gpa, uint64_t addr, uint32_t len, uint16_t flags = 0,
               uint16_t next = 0) const {
    check(mem_.write_obj(gpa, addr) && mem_.write_obj(gpa + 8, len) &&
              mem_.write_obj(gpa + 12, flags) && mem_.write_obj(gpa + 14, next),
          "descriptor outside guest memory");
  }
  // Puts `head` in the next available ring slot and publishes avail->idx.
  void push(uint16_t head) {
    const uint16_t idx = avail_idx();
    check(mem_.write_obj<uint16_t>(avail_gpa_ + kAvailRingOffset + 2 * (idx % size_), head),
          "avail ring");
    std::atomic_thread_fence(std::memory_order_release);
    set_avail_idx(static_cast<uint16_t>(idx + 1));
  }

  // Builds a chain from free descriptors, makes it available, returns its head.
  uint16_t add_chain(const std::vector<Seg>& segs) {
    uint16_t head = write_chain(segs);
    push(head);
    return head;
  }
  // Writes the chain's descriptors without publishing it (push(head) later).
  uint16_t write_chain(const std::vector<Seg>& segs) {
    check(!segs.empty() && segs.size() <= free_.size(), "QueueDriver: out of descriptors");
    std::vector<uint16_t> ids;
    for (size_t i = 0; i < segs.size(); ++i) {
      ids.push_back(free_.back());
      free_.pop_back();
    }
    for (size_t i = 0; i < segs.size(); ++i) {
      uint16_t flags = segs[i].writable ? kVirtqDescFWrite : 0;
      uint16_t next = 0;
      if (i + 1 < segs.size()) {
        flags |= kVirtqDescFNext;
        next = ids[i + 1];
      }
      desc(ids[i], segs[i].gpa, segs[i].len, flags, next);
    }
    chains_[ids[0]] = ids;
    return ids[0];
  }
  // One descriptor pointing at an indirect table (placed in the data area)
  // that holds `segs`. Needs VIRTIO_F_INDIRECT_DESC negotiated.
  uint16_t add_indirect_chain(const std::vector<Seg>& segs) {
    const uint64_t table = alloc(kDescSize * segs.size(), 16);
    for (size_t i = 0; i < segs.size(); ++i) {
      uint16_t flags = segs[i].writable ? kVirtqDescFWrite : 0;
      uint16_t next = 0;
      if (i + 1 < segs.size()) {
        flags |= kVirtqDescFNext;
        next = static_cast<uint16_t>(i + 1);
      }
      desc_at(table + kDescSize * i, segs[i].gpa, segs[i].len, flags, next);
    }
    check(!free_.empty(), "QueueDriver: out of descriptors");
    uint16_t id = free_.back();
    free_.pop_back();
    desc(id, table, static_cast<uint32_t>(kDescSize * segs.size()), kVirtqDescFIndirect);
    chains_[id] = {id};
    push(id);
    return id;
  }

  uint16_t avail_idx() const { return read16(avail_gpa_ + kAvailIdxOffset); }
  void set_avail_idx(uint16_t v) const { write16(avail_gpa_ + kAvailIdxOffset, v); }
  void set_avail_flags(uint16_t v) const { write16(avail_gpa_ + kAvailFlagsOffset, v); }
  // EVENT_IDX: the used index after which the driver wants an interrupt.
  void set_used_event(uint16_t v) const { write16(avail_gpa_ + used_event_offset(size_), v); }

  // --- Used ring -------------------------------------------------------------
  uint16_t used_flags() const { return read16(used_gpa_ + kUsedFlagsOffset); }
  uint16_t used_idx() const { return read16(used_gpa_ + kUsedIdxOffset); }
  UsedElem used_elem(uint16_t slot) const {
    const uint64_t at = used_gpa_ + kUsedRingOffset + kUsedElemSize * (slot % size_);
    return {*mem_.read_obj<uint32_t>(at), *mem_.read_obj<uint32_t>(at + 4)};
  }
  // EVENT_IDX: the avail index after which the device wants a notification.
  uint16_t avail_event() const { return read16(used_gpa_ + avail_event_offset(size_)); }

  // Number of used entries not yet taken with pop_used().
  uint16_t pending_used() const { return static_cast<uint16_t>(used_idx() - last_used_); }
  // The next used entry, if the device returned one; its descriptors go back
  // to the free list (if it was a chain this driver built).
  std::optional<UsedElem> pop_used() {
    std::atomic_thread_fence(std::memory_order_acquire);
    if (used_idx() == last_used_) return std::nullopt;
    UsedElem e = used_elem(last_used_);
    ++last_used_;
    auto it = chains_.find(static_cast<uint16_t>(e.id));
    if (it != chains_.end()) {
      for (auto d : it->second) free_.push_back(d);
      chains_.erase(it);
    }
    return e;
  }

 private:
  static void check(bool ok, const char* what) {
    if (!ok) throw std::runtime_error(what);
  }
  uint16_t read16(uint64_t gpa) const {
    auto v = mem_.read_obj<uint16_t>(gpa);
    check(v.has_value(), "ring read outside guest memory");
    return *v;
  }
  void write16(uint64_t gpa, uint16_t v) const {
    check(mem_.write_obj(gpa, v), "ring write outside guest memory");
  }

  const memory::GuestMemory& mem_;
  uint16_t size_;
  uint64_t desc_gpa_, avail_gpa_, used_gpa_;
  uint64_t data_gpa_, data_end_, data_next_;
  std::vector<uint16_t> free_;
  std::map<uint16_t, std::vector<uint16_t>> chains_;  // head -> descriptor ids
  uint16_t last_used_ = 0;
};

}  // namespace rz::virtio::test
