#include "devices/bus.h"

#include <algorithm>
#include <mutex>

#include "util/error.h"

namespace rz::devices {

void Bus::insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t size,
                 std::string name) {
  if (size == 0) throw Error("bus: empty range for " + name);
  std::unique_lock lock(mu_);
  if (base + size < base) throw Error("bus: range of " + name + " wraps around");
  auto next = ranges_.lower_bound(base);
  if (next != ranges_.end() && next->first < base + size)
    throw Error("bus: " + name + " overlaps " + next->second.name);
  if (next != ranges_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.size > base)
      throw Error("bus: " + name + " overlaps " + prev->second.name);
  }
  ranges_.emplace(base, Range{size, std::move(device), std::move(name)});
}

const Bus::Range* Bus::find(uint64_t addr, uint64_t len, uint64_t* base) const {
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return nullptr;
  --it;
  const uint64_t off = addr - it->first;
  if (off >= it->second.size || len > it->second.size - off) return nullptr;
  *base = it->first;
  return &it->second;
}

bool Bus::remove(uint64_t base) {
  std::unique_lock lock(mu_);
  return ranges_.erase(base) != 0;
}

std::shared_ptr<BusDevice> Bus::resolve(uint64_t addr, uint64_t len, uint64_t* offset) const {
  std::shared_lock lock(mu_);
  uint64_t base = 0;
  const Range* r = find(addr, len, &base);
  if (!r) return nullptr;
  *offset = addr - base;
  return r->device;
}

bool Bus::read(uint64_t addr, std::span<uint8_t> data) const {
  uint64_t offset = 0;
  const std::shared_ptr<BusDevice> dev = resolve(addr, data.size(), &offset);
  if (!dev) {
    std::fill(data.begin(), data.end(), 0xff);
    return false;
  }
  dev->read(offset, data);
  return true;
}

bool Bus::write(uint64_t addr, std::span<const uint8_t> data) const {
  uint64_t offset = 0;
  const std::shared_ptr<BusDevice> dev = resolve(addr, data.size(), &offset);
  if (!dev) return false;
  dev->write(offset, data);
  return true;
}

std::string Bus::name_at(uint64_t addr) const {
  std::shared_lock lock(mu_);
  uint64_t base = 0;
  const Range* r = find(addr, 1, &base);
  return r ? r->name : std::string();
}

}  // namespace rz::devices
