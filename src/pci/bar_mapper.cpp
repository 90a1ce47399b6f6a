#include "pci/bar_mapper.h"

#include <array>
#include <cstdio>
#include <optional>

#include "util/error.h"

namespace rz::pci {

void connect_bars(const std::shared_ptr<PciDevice>& device, devices::Bus& mmio, devices::Bus& pio,
                  const std::string& name, BarConflictHandler on_conflict) {
  // Where each BAR was actually inserted: a BAR that lost a conflict must not
  // remove whichever range owns its old base.
  auto inserted = std::make_shared<std::array<std::optional<uint64_t>, kNumBars>>();
  std::weak_ptr<PciDevice> weak = device;
  device->set_bar_move_handler([weak, &mmio, &pio, name, on_conflict, inserted](const BarMove& m) {
    if (m.index >= kNumBars) return;
    devices::Bus& bus = m.type == BarType::Io ? pio : mmio;
    std::optional<uint64_t>& at = (*inserted)[m.index];
    if (at) {
      bus.remove(*at);
      at.reset();
    }
    if (!m.new_address) return;
    auto dev = weak.lock();
    if (!dev) return;
    const std::string range = name + ".bar" + std::to_string(m.index);
    try {
      bus.insert(std::make_shared<PciBarRegion>(std::move(dev), m.index), *m.new_address, m.size,
                 range);
      at = *m.new_address;
    } catch (const Error& e) {
      if (on_conflict) {
        char addr[32];
        std::snprintf(addr, sizeof addr, "%#llx", static_cast<unsigned long long>(*m.new_address));
        on_conflict(range + " left unmapped at " + addr + ": " + e.what());
      }
    }
  });
}

}  // namespace rz::pci
