/*
 * core/core.h - small internal helpers shared by subsystems.
 */
#ifndef MMK_CORE_H
#define MMK_CORE_H

#include <stddef.h>
#include <stdint.h>
#include "sys/sys.h"

/* CRC-32C (Castagnoli; init and final xor ~0), incremental:
 * mmk__crc32c(mmk__crc32c(0, a), b) == mmk__crc32c(0, a..b).  SSE4.2 when
 * the CPU has it, bitwise otherwise (same results). */
MMK_HIDDEN uint32_t mmk__crc32c(uint32_t crc, const void *buf, size_t len);

#endif
