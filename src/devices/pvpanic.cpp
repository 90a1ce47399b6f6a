#include "devices/pvpanic.h"

namespace rz::devices {

Pvpanic::Pvpanic(GuestRequestHandler on_request) : on_request_(std::move(on_request)) {}

void Pvpanic::read(uint64_t offset, std::span<uint8_t> data) {
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = offset + i == 0 ? kSupportedEvents : 0xff;
}

void Pvpanic::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset != 0 || data.empty()) return;
  if ((data[0] & kPanicked) && on_request_) on_request_(GuestRequest::Panic);
}

}  // namespace rz::devices
