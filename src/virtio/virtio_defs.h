// Constants of the virtio 1.2 specification (OASIS, "Virtual I/O Device
// (VIRTIO) Version 1.2") that are independent of the transport: split
// virtqueue layout and flags, reserved feature bits, device status bits and
// device type ids.
//
// Names follow the spec's (VIRTQ_DESC_F_NEXT -> kVirtqDescFNext) so that a
// grep for the spec name's tail finds them; they are constants rather than
// macros so they cannot clash with <linux/virtio_*.h>.
#pragma once

#include <cstdint>

namespace rz::virtio {

// --- Split virtqueue layout (spec 2.7) --------------------------------------
// Queue Size is a power of 2 and at most 32768 for split virtqueues.
inline constexpr uint32_t kMaxQueueSize = 32768;

// Minimum alignment of each part, in bytes.
inline constexpr uint64_t kDescTableAlign = 16;
inline constexpr uint64_t kAvailRingAlign = 2;
inline constexpr uint64_t kUsedRingAlign = 4;

// struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; }
inline constexpr uint64_t kDescSize = 16;
// struct virtq_used_elem { le32 id; le32 len; }
inline constexpr uint64_t kUsedElemSize = 8;

// Sizes of the three parts for a queue of `n` entries (used_event and
// avail_event included, as in the spec's table).
constexpr uint64_t desc_table_size(uint32_t n) { return kDescSize * n; }
constexpr uint64_t avail_ring_size(uint32_t n) { return 6 + 2 * uint64_t{n}; }
constexpr uint64_t used_ring_size(uint32_t n) { return 6 + kUsedElemSize * n; }

// Field offsets inside the available ring (struct virtq_avail).
inline constexpr uint64_t kAvailFlagsOffset = 0;
inline constexpr uint64_t kAvailIdxOffset = 2;
inline constexpr uint64_t kAvailRingOffset = 4;
constexpr uint64_t used_event_offset(uint32_t n) { return 4 + 2 * uint64_t{n}; }

// Field offsets inside the used ring (struct virtq_used).
inline constexpr uint64_t kUsedFlagsOffset = 0;
inline constexpr uint64_t kUsedIdxOffset = 2;
inline constexpr uint64_t kUsedRingOffset = 4;
constexpr uint64_t avail_event_offset(uint32_t n) { return 4 + kUsedElemSize * n; }

// virtq_desc.flags
inline constexpr uint16_t kVirtqDescFNext = 1;      // buffer continues via `next`
inline constexpr uint16_t kVirtqDescFWrite = 2;     // device write-only (else read-only)
inline constexpr uint16_t kVirtqDescFIndirect = 4;  // buffer holds a descriptor table

// virtq_avail.flags (driver -> device): please do not interrupt me.
inline constexpr uint16_t kVirtqAvailFNoInterrupt = 1;
// virtq_used.flags (device -> driver): please do not notify me.
inline constexpr uint16_t kVirtqUsedFNoNotify = 1;

// --- Feature bits reserved for the transport and the queue (spec 6) --------
// Bits 0..23 and 50..127 are device-type specific; 24..40 are listed here.
inline constexpr unsigned kVirtioFNotifyOnEmpty = 24;  // legacy only
inline constexpr unsigned kVirtioFAnyLayout = 27;      // legacy only
inline constexpr unsigned kVirtioFIndirectDesc = 28;   // a.k.a. VIRTIO_RING_F_INDIRECT_DESC
inline constexpr unsigned kVirtioFEventIdx = 29;       // a.k.a. VIRTIO_RING_F_EVENT_IDX
inline constexpr unsigned kVirtioFVersion1 = 32;
inline constexpr unsigned kVirtioFAccessPlatform = 33;  // formerly IOMMU_PLATFORM
inline constexpr unsigned kVirtioFRingPacked = 34;
inline constexpr unsigned kVirtioFInOrder = 35;
inline constexpr unsigned kVirtioFOrderPlatform = 36;
inline constexpr unsigned kVirtioFSrIov = 37;
inline constexpr unsigned kVirtioFNotificationData = 38;
inline constexpr unsigned kVirtioFNotifConfigData = 39;
inline constexpr unsigned kVirtioFRingReset = 40;

// The bit mask for a feature bit number.
constexpr uint64_t feature_bit(unsigned bit) { return uint64_t{1} << bit; }

// --- Device status field (spec 2.1) ----------------------------------------
inline constexpr uint8_t kStatusAcknowledge = 1;
inline constexpr uint8_t kStatusDriver = 2;
inline constexpr uint8_t kStatusDriverOk = 4;
inline constexpr uint8_t kStatusFeaturesOk = 8;
inline constexpr uint8_t kStatusDeviceNeedsReset = 64;
inline constexpr uint8_t kStatusFailed = 128;

// --- Device types (spec 5) --------------------------------------------------
inline constexpr uint16_t kDeviceIdReserved = 0;  // "no device" / invalid
inline constexpr uint16_t kDeviceIdNet = 1;
inline constexpr uint16_t kDeviceIdBlock = 2;
inline constexpr uint16_t kDeviceIdConsole = 3;
inline constexpr uint16_t kDeviceIdEntropy = 4;
inline constexpr uint16_t kDeviceIdBalloonLegacy = 5;  // traditional memory balloon
inline constexpr uint16_t kDeviceIdIoMemory = 6;
inline constexpr uint16_t kDeviceIdRpmsg = 7;
inline constexpr uint16_t kDeviceIdScsiHost = 8;
inline constexpr uint16_t kDeviceId9p = 9;
inline constexpr uint16_t kDeviceIdMac80211Wlan = 10;
inline constexpr uint16_t kDeviceIdRprocSerial = 11;
inline constexpr uint16_t kDeviceIdCaif = 12;
inline constexpr uint16_t kDeviceIdBalloon = 13;  // the 1.x memory balloon
inline constexpr uint16_t kDeviceIdGpu = 16;
inline constexpr uint16_t kDeviceIdTimer = 17;
inline constexpr uint16_t kDeviceIdInput = 18;
inline constexpr uint16_t kDeviceIdVsock = 19;
inline constexpr uint16_t kDeviceIdCrypto = 20;
inline constexpr uint16_t kDeviceIdSignalDist = 21;
inline constexpr uint16_t kDeviceIdPstore = 22;
inline constexpr uint16_t kDeviceIdIommu = 23;
inline constexpr uint16_t kDeviceIdMemory = 24;
inline constexpr uint16_t kDeviceIdSound = 25;
inline constexpr uint16_t kDeviceIdFs = 26;
inline constexpr uint16_t kDeviceIdPmem = 27;
inline constexpr uint16_t kDeviceIdRpmb = 28;
inline constexpr uint16_t kDeviceIdMac80211Hwsim = 29;
inline constexpr uint16_t kDeviceIdVideoEncoder = 30;
inline constexpr uint16_t kDeviceIdVideoDecoder = 31;
inline constexpr uint16_t kDeviceIdScmi = 32;
inline constexpr uint16_t kDeviceIdNitroSecMod = 33;
inline constexpr uint16_t kDeviceIdI2cAdapter = 34;
inline constexpr uint16_t kDeviceIdWatchdog = 35;
inline constexpr uint16_t kDeviceIdCan = 36;
inline constexpr uint16_t kDeviceIdParamServer = 38;
inline constexpr uint16_t kDeviceIdAudioPolicy = 39;
inline constexpr uint16_t kDeviceIdBluetooth = 40;
inline constexpr uint16_t kDeviceIdGpio = 41;

// --- virtio over PCI identifiers (spec 4.1.2) -------------------------------
inline constexpr uint16_t kPciVendorId = 0x1af4;
// Modern (non-transitional) PCI device id = kPciDeviceIdBase + device type.
inline constexpr uint16_t kPciDeviceIdBase = 0x1040;

}  // namespace rz::virtio
