/*
 * mmkit/common.h - conventions shared by every mmkit API.
 *
 * Errors: every function that can fail returns 0 (or a non-negative count)
 * on success and a negative errno value on failure (-EINVAL, -ENOMEM, ...),
 * like libuv.  A few failures that have no errno equivalent use the
 * MMK_E* codes below, which lie outside the errno range.  mmk_strerror()
 * turns any of them into a message.  The library never prints.
 *
 * Handles are caller-owned: every _create/_open call has a matching
 * _destroy/_close call, and a handle is not thread-safe unless its header says
 * so.
 */
#ifndef MMKIT_COMMON_H
#define MMKIT_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MMK_API __attribute__((visibility("default")))
#else
#define MMK_API
#endif

#define MMK_VERSION_MAJOR 0
#define MMK_VERSION_MINOR 1
#define MMK_VERSION_PATCH 0

/* mmkit-specific error codes (negative, below -4095 so they never collide
 * with a negative errno). */
enum {
	MMK_EBASE     = -20000,
	MMK_ECRASHED  = -20001, /* mmk_try: the function crashed (a signal) */
	MMK_ETIMEDOUT = -20002, /* mmk_try: the time limit expired */
	MMK_EFAILED   = -20003, /* mmk_try: the function returned an error */
	MMK_ECORRUPT  = -20004, /* persistent data failed its checksum */
	MMK_ENOFEAT   = -20005, /* the kernel lacks a required feature */
	MMK_EFATAL    = -20006, /* the handle is unusable after an earlier error */
	MMK_ELAST     = -20007
};

/* A static, human-readable message for a return code (0, -errno or MMK_E*).
 * Never returns NULL. Thread-safe. */
MMK_API const char *mmk_strerror(int err);

/* The library's version as "major.minor.patch". */
MMK_API const char *mmk_version(void);

#ifdef __cplusplus
}
#endif
#endif
