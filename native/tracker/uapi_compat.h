/*
 * Kernel uapi definitions newer than the build host's headers.
 *
 * Debian 12 ships linux-libc-dev 6.1; PAGEMAP_SCAN, UFFD_FEATURE_WP_ASYNC and
 * UFFD_FEATURE_WP_UNPOPULATED arrived later (6.7 / 6.4). Each definition below
 * is guarded so newer headers win, and names the uapi file it is copied from.
 * The kernel decides at run time what exists (mt_probe() asks it); these only
 * let the code compile.
 */
#ifndef MIGRATE_TRACK_UAPI_COMPAT_H
#define MIGRATE_TRACK_UAPI_COMPAT_H

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

/* include/uapi/linux/userfaultfd.h (UFFD_USER_MODE_ONLY: 5.11) */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

/* include/uapi/linux/userfaultfd.h, struct uffdio_api.features (6.4 / 6.7) */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

/* include/uapi/linux/fs.h (6.7): the PAGEMAP_SCAN ioctl on /proc/PID/pagemap */
#ifndef PAGEMAP_SCAN

/* Bitmasks provided in pm_scan_args masks and reported in page_region.categories. */
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)

/* struct page_region - Page region with flags; end is exclusive. */
struct page_region {
	__u64 start;
	__u64 end;
	__u64 categories;
};

/* Flags for PAGEMAP_SCAN ioctl */
#define PM_SCAN_WP_MATCHING (1 << 0)   /* Write protect the pages matched. */
#define PM_SCAN_CHECK_WPASYNC (1 << 1) /* Abort the scan when a non-WP-enabled page is found. */

/* struct pm_scan_arg - Pagemap ioctl argument (walk_end is written by the kernel) */
struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)

#endif /* PAGEMAP_SCAN */

/* include/uapi/linux/pidfd.h (6.9): pidfd_open() of a thread that is not a group leader */
#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

#endif /* MIGRATE_TRACK_UAPI_COMPAT_H */
