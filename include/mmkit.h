/*
 * mmkit.h - the umbrella header.
 *
 * mmkit brings kernel virtual-memory systems to ordinary Linux programs from
 * user space: in-place memory snapshots (mmcontext), fork with a shared
 * region (sfork), a page-fault profiler, a page table that never loses a
 * record, and recoverable virtual memory.  Include this header and link with
 * -lmmkit (pkg-config mmkit).
 */
#ifndef MMKIT_H
#define MMKIT_H

#include <mmkit/common.h>
#include <mmkit/features.h>
#include <mmkit/snapshot.h>
#include <mmkit/sfork.h>
#include <mmkit/prof.h>
#include <mmkit/rvm.h>
#include <mmkit/ckpt.h>
#if __has_include(<mmkit/pagetab.h>)
#include <mmkit/pagetab.h>
#endif

#endif
