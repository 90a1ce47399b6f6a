#include "pci/msix.h"

#include <algorithm>

#include "util/error.h"

namespace rz::pci {
namespace {

void put_le(std::span<uint8_t> out, uint64_t v) {
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t get_le(std::span<const uint8_t> in) {
  uint64_t v = 0;
  for (size_t i = 0; i < in.size(); ++i) v |= static_cast<uint64_t>(in[i]) << (8 * i);
  return v;
}

// A 4-byte access at a multiple of 4 or an 8-byte one at a multiple of 8.
bool good_access(uint64_t offset, size_t len) {
  return (len == 4 || len == 8) && offset % len == 0;
}

}  // namespace

MsixCapability make_msix_capability(uint16_t vectors, uint8_t table_bir, uint32_t table_offset,
                                    uint8_t pba_bir, uint32_t pba_offset) {
  if (vectors == 0 || vectors > kMsixMaxVectors) throw Error("msix: 1..2048 vectors");
  if (table_bir > 5 || pba_bir > 5) throw Error("msix: BIR must be 0..5");
  if (table_offset % 8 || pba_offset % 8) throw Error("msix: table/PBA offsets must be 8-aligned");
  MsixCapability cap;
  const uint16_t control = static_cast<uint16_t>(vectors - 1);
  const uint32_t table = table_offset | table_bir;
  const uint32_t pba = pba_offset | pba_bir;
  cap.bytes[0] = kCapIdMsix;
  cap.bytes[1] = 0;
  cap.bytes[2] = static_cast<uint8_t>(control);
  cap.bytes[3] = static_cast<uint8_t>(control >> 8);
  for (int i = 0; i < 4; ++i) {
    cap.bytes[4 + i] = static_cast<uint8_t>(table >> (8 * i));
    cap.bytes[8 + i] = static_cast<uint8_t>(pba >> (8 * i));
  }
  cap.writable[3] = static_cast<uint8_t>((kMsixControlFunctionMask | kMsixControlEnable) >> 8);
  return cap;
}

MsixTable::MsixTable(uint16_t vectors) {
  if (vectors == 0 || vectors > kMsixMaxVectors) throw Error("msix: 1..2048 vectors");
  entries_.resize(vectors);
  pba_.resize((vectors + 63) / 64, 0);
}

void MsixTable::set_deliver(DeliverFn fn) {
  std::lock_guard lock(mu_);
  deliver_ = std::move(fn);
}

void MsixTable::set_route_handler(RouteFn fn) {
  std::lock_guard lock(mu_);
  route_ = std::move(fn);
}

MsiMessage MsixTable::message_of(const Entry& e) {
  return MsiMessage{(static_cast<uint64_t>(e.addr_hi) << 32) | e.addr_lo, e.data};
}

bool MsixTable::effectively_masked(uint16_t vector) const {
  return !enabled_ || function_masked_ || (entries_[vector].control & kMsixVectorCtlMask);
}

bool MsixTable::pending_locked(uint16_t vector) const {
  return (pba_[vector / 64] >> (vector % 64)) & 1;
}

void MsixTable::set_pending(uint16_t vector, bool on) {
  const uint64_t bit = 1ull << (vector % 64);
  if (on)
    pba_[vector / 64] |= bit;
  else
    pba_[vector / 64] &= ~bit;
}

void MsixTable::table_read(uint64_t offset, std::span<uint8_t> data) const {
  if (!good_access(offset, data.size()) || offset / kMsixEntrySize >= entries_.size()) {
    std::fill(data.begin(), data.end(), 0xff);
    return;
  }
  std::lock_guard lock(mu_);
  const Entry& e = entries_[offset / kMsixEntrySize];
  const uint32_t words[4] = {e.addr_lo, e.addr_hi, e.data, e.control};
  const size_t first = (offset % kMsixEntrySize) / 4;
  uint64_t v = words[first];
  if (data.size() == 8) v |= static_cast<uint64_t>(words[first + 1]) << 32;
  put_le(data, v);
}

void MsixTable::table_write(uint64_t offset, std::span<const uint8_t> data) {
  if (!good_access(offset, data.size()) || offset / kMsixEntrySize >= entries_.size()) return;
  std::lock_guard lock(mu_);
  const uint16_t vector = static_cast<uint16_t>(offset / kMsixEntrySize);
  Entry& e = entries_[vector];
  const MsiMessage old_msg = message_of(e);
  const bool old_masked = effectively_masked(vector);

  uint32_t* words[4] = {&e.addr_lo, &e.addr_hi, &e.data, &e.control};
  const uint64_t v = get_le(data);
  const size_t first = (offset % kMsixEntrySize) / 4;
  *words[first] = static_cast<uint32_t>(v);
  if (data.size() == 8) *words[first + 1] = static_cast<uint32_t>(v >> 32);
  e.control &= kMsixVectorCtlMask;  // the other bits are reserved, read as 0

  const MsiMessage msg = message_of(e);
  const bool masked = effectively_masked(vector);
  if ((msg != old_msg || masked != old_masked) && route_) route_(vector, msg, masked);
  if (old_masked && !masked && pending_locked(vector)) {
    set_pending(vector, false);
    if (deliver_) deliver_(vector, msg);
  }
}

void MsixTable::pba_read(uint64_t offset, std::span<uint8_t> data) const {
  if (!good_access(offset, data.size()) || offset / 8 >= pba_.size()) {
    std::fill(data.begin(), data.end(), 0xff);
    return;
  }
  std::lock_guard lock(mu_);
  uint64_t v = pba_[offset / 8];
  if (data.size() == 4) v >>= 8 * (offset % 8);
  put_le(data, v);
}

void MsixTable::pba_write(uint64_t, std::span<const uint8_t>) {
  // The pending bits belong to the device; guest writes have no effect.
}

void MsixTable::set_message_control(uint16_t control) {
  std::lock_guard lock(mu_);
  const bool enabled = control & kMsixControlEnable;
  const bool fmask = control & kMsixControlFunctionMask;
  if (enabled == enabled_ && fmask == function_masked_) return;

  std::vector<bool> was_masked(entries_.size());
  for (uint16_t v = 0; v < entries_.size(); ++v) was_masked[v] = effectively_masked(v);
  enabled_ = enabled;
  function_masked_ = fmask;
  for (uint16_t v = 0; v < entries_.size(); ++v) {
    const bool masked = effectively_masked(v);
    if (masked == was_masked[v]) continue;
    const MsiMessage msg = message_of(entries_[v]);
    if (route_) route_(v, msg, masked);
    if (!masked && pending_locked(v)) {
      set_pending(v, false);
      if (deliver_) deliver_(v, msg);
    }
  }
}

bool MsixTable::enabled() const {
  std::lock_guard lock(mu_);
  return enabled_;
}

bool MsixTable::function_masked() const {
  std::lock_guard lock(mu_);
  return function_masked_;
}

void MsixTable::notify(uint16_t vector) {
  std::lock_guard lock(mu_);
  if (vector >= entries_.size()) return;
  if (effectively_masked(vector)) {
    set_pending(vector, true);
    return;
  }
  if (deliver_) deliver_(vector, message_of(entries_[vector]));
}

MsiMessage MsixTable::message(uint16_t vector) const {
  std::lock_guard lock(mu_);
  if (vector >= entries_.size()) return {};
  return message_of(entries_[vector]);
}

bool MsixTable::vector_masked(uint16_t vector) const {
  std::lock_guard lock(mu_);
  if (vector >= entries_.size()) return true;
  return entries_[vector].control & kMsixVectorCtlMask;
}

bool MsixTable::pending(uint16_t vector) const {
  std::lock_guard lock(mu_);
  if (vector >= entries_.size()) return false;
  return pending_locked(vector);
}

}  // namespace rz::pci
