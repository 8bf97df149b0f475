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

/* Positional I/O of a whole buffer (core/fileio.c): 0, or a negative errno;
 * pread_all returns eof_err when the file ends before len bytes. */
MMK_HIDDEN int mmk__pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
MMK_HIDDEN int mmk__pread_all(int fd, void *buf, size_t len, uint64_t off, int eof_err);

#endif
