/*
 * core/error.c - mmk_strerror and mmk_version.
 *
 * Invariant: returns static strings only, so it is thread-safe and may be
 * called after any failure, including out-of-memory.
 */
#include <mmkit/common.h>

#include <string.h>

#define STR2(x) #x
#define STR(x) STR2(x)

const char *mmk_version(void)
{
	return STR(MMK_VERSION_MAJOR) "." STR(MMK_VERSION_MINOR) "." STR(MMK_VERSION_PATCH);
}

const char *mmk_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
	case MMK_ECRASHED:
		return "the function crashed (signal); memory was rolled back";
	case MMK_ETIMEDOUT:
		return "the function exceeded its time limit; memory was rolled back";
	case MMK_EFAILED:
		return "the function returned an error; memory was rolled back";
	case MMK_ECORRUPT:
		return "stored data failed its checksum";
	case MMK_ENOFEAT:
		return "the running kernel lacks a required feature";
	case MMK_EFATAL:
		return "the handle is unusable after an earlier fatal error";
	default:
		break;
	}
	if (err < 0 && err > -4096)
		return strerrordesc_np(-err) ? strerrordesc_np(-err) : "unknown error";
	return "unknown error";
}
