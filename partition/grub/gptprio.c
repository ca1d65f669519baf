/* gptprio.c - twinslot's A/B /usr slot chooser: gptprio.next for GRUB 2.
 *
 * Copyright (C) 2026 The twinslot authors
 * SPDX-License-Identifier: GPL-3.0-or-later
 *
 * This program is free software: you can redistribute it and/or modify it under the terms of
 * the GNU General Public License as published by the Free Software Foundation, either version
 * 3 of the License, or (at your option) any later version.
 *
 * This program is distributed in the hope that it will be useful, but WITHOUT ANY WARRANTY;
 * without even the implied warranty of MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.
 * See the GNU General Public License for more details.
 *
 * You should have received a copy of the GNU General Public License along with this program.
 * If not, see <https://www.gnu.org/licenses/>.
 */

/*
 * gptprio.next -d DEVVAR -u UUIDVAR [-t TYPEGUID]
 *
 * Reads the GPT of the disk that holds $root and chooses, among the entries of the given
 * partition type (default: the CoreOS/Flatcar/twinslot /usr type), the one with the highest
 * priority > 0 that has tries left or is marked successful; ties go to the lower entry index.
 * The attribute word of an entry carries priority in bits 48-51, tries in bits 52-55 and
 * successful in bit 56 (the ChromeOS cgpt layout); no other bit is ever changed.
 *
 * When the chosen entry has tries > 0, tries is decremented and both GPT copies are written
 * from the copy that was read, each with fresh entry-array and header CRC32s: first the copy
 * that was not read (the backup when the primary is good; the damaged primary otherwise),
 * then the one that was, each as entry array then header, and each flushed to the medium
 * (EFI FlushBlocks) before the next is touched. At every instant at least one copy
 * is valid, and a damaged copy is repaired. With tries 0 (a successful slot) nothing is
 * written. Then DEVVAR is set to the GRUB device of the chosen partition ("hd0,gpt3") and
 * UUIDVAR to its unique partition GUID (lower case, 8-4-4-4-12).
 *
 * Nothing is written when no entry is eligible, or when both copies are damaged; the command
 * then fails with an error that says why.
 *
 * The GPT layout used here is the one of the UEFI specification (chapter 5, "GUID Partition
 * Table (GPT) Disk Layout"): all integers little endian, GUIDs in the mixed-endian encoding
 * (first three fields little endian, last eight bytes as they are).
 */

#include <grub/types.h>
#include <grub/misc.h>
#include <grub/mm.h>
#include <grub/err.h>
#include <grub/dl.h>
#include <grub/disk.h>
#include <grub/env.h>
#include <grub/extcmd.h>
#include <grub/i18n.h>
#include <grub/safemath.h>
#include <grub/efi/api.h>
#include <grub/efi/efi.h>
#include <grub/efi/disk.h>

GRUB_MOD_LICENSE ("GPLv3+");

#define CMD "gptprio.next"

/* GPT header (UEFI spec table 5-5): byte offsets of the fields used here. */
#define HDR_SIGNATURE     0
#define HDR_REVISION      8
#define HDR_SIZE          12
#define HDR_CRC           16
#define HDR_MY_LBA        24
#define HDR_ALTERNATE_LBA 32
#define HDR_FIRST_USABLE  40
#define HDR_LAST_USABLE   48
#define HDR_ENTRIES_LBA   72
#define HDR_NUM_ENTRIES   80
#define HDR_ENTRY_SIZE    84
#define HDR_ENTRIES_CRC   88
#define HDR_MIN_SIZE      92

#define GPT_REVISION_1_0  0x00010000

/* Partition entry (UEFI spec table 5-6). */
#define ENT_TYPE          0
#define ENT_UNIQUE        16
#define ENT_ATTRIBUTES    48
#define ENT_SIZE          128

/* Bounds on untrusted header values. */
#define MAX_ENTRIES       1024
#define MIN_LOG_SECTOR    9    /* 512 bytes */
#define MAX_LOG_SECTOR    12   /* 4096 bytes */

/* gptprio fields of the attribute word (ChromeOS cgpt layout). */
#define PRIO_SHIFT        48
#define TRIES_SHIFT       52
#define SUCCESSFUL_SHIFT  56
#define FIELD_MASK        0xfULL

#define GUID_STRLEN       36

/* 5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6: the CoreOS/Flatcar/twinslot /usr partition type. */
static const char default_type[] = "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6";

static const struct grub_arg_option options[] =
  {
    {"device-var", 'd', 0,
     N_("Set VARNAME to the GRUB device of the chosen partition (e.g. hd0,gpt3)."),
     N_("VARNAME"), ARG_TYPE_STRING},
    {"uuid-var", 'u', 0,
     N_("Set VARNAME to the unique GUID of the chosen partition."),
     N_("VARNAME"), ARG_TYPE_STRING},
    {"type", 't', 0,
     N_("Partition type GUID to choose among (default: the /usr type "
	"5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6)."),
     N_("GUID"), ARG_TYPE_STRING},
    {0, 0, 0, 0, 0, 0}
  };

enum { OPT_DEVICE_VAR, OPT_UUID_VAR, OPT_TYPE };

/* One copy of the table: a header sector and its entry array. */
struct gpt_copy
{
  const char *name;          /* "primary" or "backup", for messages */
  const char *why;           /* why the copy is unusable, or NULL */
  int header_ok;             /* the header checks out (its array may not) */
  int ok;                    /* header and entry array check out */
  grub_uint64_t lba;         /* where the header is */
  grub_uint64_t alternate;   /* where it says its partner is */
  grub_uint64_t entries_lba; /* where its entry array is */
  grub_uint8_t *sector;      /* the header sector */
  grub_uint8_t *entries;     /* the entry array, whole sectors */
};

struct gpt_disk
{
  grub_disk_t disk;
  unsigned log_ss;           /* log2 of the logical sector size */
  grub_size_t ss;            /* logical sector size in bytes */
  grub_uint64_t total;       /* number of logical sectors, 0 when unknown */
  struct gpt_copy primary;
  struct gpt_copy backup;
};

/* Little-endian accessors for on-disk fields. */

static grub_uint32_t
le32 (const grub_uint8_t *p)
{
  return (grub_uint32_t) p[0] | (grub_uint32_t) p[1] << 8
    | (grub_uint32_t) p[2] << 16 | (grub_uint32_t) p[3] << 24;
}

static grub_uint64_t
le64 (const grub_uint8_t *p)
{
  return (grub_uint64_t) le32 (p) | (grub_uint64_t) le32 (p + 4) << 32;
}

static void
put_le32 (grub_uint8_t *p, grub_uint32_t v)
{
  p[0] = v & 0xff;
  p[1] = (v >> 8) & 0xff;
  p[2] = (v >> 16) & 0xff;
  p[3] = (v >> 24) & 0xff;
}

static void
put_le64 (grub_uint8_t *p, grub_uint64_t v)
{
  put_le32 (p, (grub_uint32_t) v);
  put_le32 (p + 4, (grub_uint32_t) (v >> 32));
}

/* CRC-32 as used by GPT (IEEE 802.3: reflected polynomial 0xEDB88320, initial value and
   final XOR 0xFFFFFFFF). Bitwise: the inputs are at most 128 KiB. */
static grub_uint32_t
crc32 (const grub_uint8_t *p, grub_size_t n)
{
  grub_uint32_t c = 0xffffffff;
  grub_size_t i;
  int k;

  for (i = 0; i < n; i++)
    {
      c ^= p[i];
      for (k = 0; k < 8; k++)
	c = (c >> 1) ^ (0xedb88320 & -(c & 1));
    }
  return c ^ 0xffffffff;
}

/* CRC of the header's first hsize bytes with its CRC field taken as zero. */
static grub_uint32_t
header_crc (const grub_uint8_t *sector, grub_uint32_t hsize)
{
  static const grub_uint8_t zero[4];
  grub_uint32_t c = 0xffffffff;
  grub_uint32_t i;
  int k;

  for (i = 0; i < hsize; i++)
    {
      c ^= (i >= HDR_CRC && i < HDR_CRC + 4) ? zero[i - HDR_CRC] : sector[i];
      for (k = 0; k < 8; k++)
	c = (c >> 1) ^ (0xedb88320 & -(c & 1));
    }
  return c ^ 0xffffffff;
}

static int
hexval (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Parses a canonical GUID string into its 16-byte on-disk (mixed-endian) form. */
static int
parse_guid (const char *s, grub_uint8_t out[16])
{
  /* Byte i of the text order lands at on-disk position order[i]. */
  static const int order[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };
  int i = 0, pos = 0;

  if (grub_strlen (s) != GUID_STRLEN)
    return 0;
  while (i < 16)
    {
      int hi, lo;

      if (pos == 8 || pos == 13 || pos == 18 || pos == 23)
	{
	  if (s[pos] != '-')
	    return 0;
	  pos++;
	  continue;
	}
      hi = hexval (s[pos]);
      lo = hexval (s[pos + 1]);
      if (hi < 0 || lo < 0)
	return 0;
      out[order[i++]] = (grub_uint8_t) (hi << 4 | lo);
      pos += 2;
    }
  return 1;
}

/* Formats 16 on-disk GUID bytes as lower-case 8-4-4-4-12 text (37 bytes with the NUL). */
static void
format_guid (const grub_uint8_t g[16], char out[GUID_STRLEN + 1])
{
  static const int order[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };
  static const char hex[] = "0123456789abcdef";
  int i, pos = 0;

  for (i = 0; i < 16; i++)
    {
      if (i == 4 || i == 6 || i == 8 || i == 10)
	out[pos++] = '-';
      out[pos++] = hex[g[order[i]] >> 4];
      out[pos++] = hex[g[order[i]] & 0xf];
    }
  out[pos] = '\0';
}

/* Converts a logical block address to GRUB's 512-byte sector address, overflow-checked. */
static grub_err_t
to_grub_sector (struct gpt_disk *d, grub_uint64_t lba, grub_disk_addr_t *out)
{
  unsigned shift = d->log_ss - GRUB_DISK_SECTOR_BITS;

  if (lba > (GRUB_DISK_MAX_SECTORS >> shift))
    return grub_error (GRUB_ERR_OUT_OF_RANGE, CMD ": LBA %llu is beyond what GRUB can address",
		       (unsigned long long) lba);
  *out = lba << shift;
  return GRUB_ERR_NONE;
}

static grub_err_t
read_lbas (struct gpt_disk *d, grub_uint64_t lba, grub_size_t bytes, grub_uint8_t *buf)
{
  grub_disk_addr_t s = 0;

  if (to_grub_sector (d, lba, &s))
    return grub_errno;
  return grub_disk_read (d->disk, s, 0, bytes, buf);
}

static grub_err_t
write_lbas (struct gpt_disk *d, grub_uint64_t lba, grub_size_t bytes, const grub_uint8_t *buf)
{
  grub_disk_addr_t s = 0;

  if (to_grub_sector (d, lba, &s))
    return grub_errno;
  if (grub_disk_write (d->disk, s, 0, bytes, buf))
    return grub_error (grub_errno, CMD ": writing %llu bytes at LBA %llu of %s failed; "
		       "the table may need a repair from the running system (cgpt repair, "
		       "sgdisk -e)", (unsigned long long) bytes, (unsigned long long) lba,
		       d->disk->name);
  return GRUB_ERR_NONE;
}

/* Asks the firmware to put the writes so far on the medium (EFI_BLOCK_IO_PROTOCOL.FlushBlocks).
   GRUB's EFI disk driver never flushes, and a drive with a volatile write cache may store the
   sectors of the second copy before those of the first: a power cut could then leave no valid
   copy. A disk without a firmware handle or Block I/O protocol has nothing to flush. A failed
   flush is only reported: failing the command would stop the boot ("no bootable /usr") on a
   firmware that answers FlushBlocks with an error, and the writes before it did not fail. */
static void
flush_disk (struct gpt_disk *d)
{
  static grub_efi_guid_t guid = GRUB_EFI_BLOCK_IO_GUID;
  grub_efi_handle_t h;
  grub_efi_block_io_t *bio;
  grub_efi_status_t st;

  h = grub_efidisk_get_device_handle (d->disk);
  if (!h)
    return;
  bio = grub_efi_open_protocol (h, &guid, GRUB_EFI_OPEN_PROTOCOL_GET_PROTOCOL);
  if (!bio || !bio->flush_blocks)
    return;
  st = efi_call_1 (bio->flush_blocks, bio);
  if (st != GRUB_EFI_SUCCESS)
    grub_printf (CMD ": warning: the firmware could not flush %s (EFI status 0x%llx); a power "
		 "cut now may need a table repair from the running system (sgdisk -e)\n",
		 d->disk->name, (unsigned long long) st);
}

/* Entry array geometry from a header: bytes of the entries and whole sectors they fill. */
static int
array_geometry (struct gpt_disk *d, const grub_uint8_t *h, grub_size_t *bytes,
		grub_uint64_t *sectors)
{
  grub_uint32_t count = le32 (h + HDR_NUM_ENTRIES);
  grub_size_t b;

  if (count == 0 || count > MAX_ENTRIES)
    return 0;
  if (grub_mul ((grub_size_t) count, (grub_size_t) ENT_SIZE, &b))
    return 0;
  *bytes = b;
  *sectors = (b + d->ss - 1) >> d->log_ss;
  return 1;
}

/* Does [start, start+n) lie on the disk and clear of the usable area and of both headers? */
static int
array_placement_ok (struct gpt_disk *d, const grub_uint8_t *h, grub_uint64_t start,
		    grub_uint64_t n, grub_uint64_t hdr_lba, grub_uint64_t alt_lba)
{
  grub_uint64_t end, first = le64 (h + HDR_FIRST_USABLE), last = le64 (h + HDR_LAST_USABLE);

  if (start < 2 || grub_add (start, n, &end))
    return 0;
  if (d->total && end > d->total)
    return 0;
  if (!(end <= first || start > last))
    return 0;
  if ((hdr_lba >= start && hdr_lba < end) || (alt_lba >= start && alt_lba < end))
    return 0;
  return 1;
}

/* Checks the header in c->sector, read from LBA c->lba; sets c->why when it is bad. */
static void
check_header (struct gpt_disk *d, struct gpt_copy *c, int is_primary)
{
  const grub_uint8_t *h = c->sector;
  grub_uint32_t hsize = le32 (h + HDR_SIZE);
  grub_uint64_t first = le64 (h + HDR_FIRST_USABLE), last = le64 (h + HDR_LAST_USABLE);
  grub_uint64_t n;
  grub_size_t bytes;

  c->header_ok = 0;
  if (grub_memcmp (h + HDR_SIGNATURE, "EFI PART", 8) != 0)
    {
      c->why = "no GPT signature";
      return;
    }
  if (le32 (h + HDR_REVISION) != GPT_REVISION_1_0)
    {
      c->why = "unknown GPT revision";
      return;
    }
  if (hsize < HDR_MIN_SIZE || hsize > d->ss)
    {
      c->why = "bad header size";
      return;
    }
  if (header_crc (h, hsize) != le32 (h + HDR_CRC))
    {
      c->why = "header CRC32 mismatch";
      return;
    }
  c->alternate = le64 (h + HDR_ALTERNATE_LBA);
  c->entries_lba = le64 (h + HDR_ENTRIES_LBA);
  if (le64 (h + HDR_MY_LBA) != c->lba)
    {
      c->why = "header does not say it lives where it was found";
      return;
    }
  if (c->alternate == c->lba || c->alternate < 1 || (!is_primary && c->alternate != 1)
      || (d->total && c->alternate >= d->total))
    {
      c->why = "bad alternate header LBA";
      return;
    }
  if (le32 (h + HDR_ENTRY_SIZE) != ENT_SIZE)
    {
      c->why = "entry size is not 128 bytes (unsupported)";
      return;
    }
  if (!array_geometry (d, h, &bytes, &n))
    {
      c->why = "number of entries is 0 or above 1024";
      return;
    }
  if (first > last || first < 2 || (d->total && last >= d->total))
    {
      c->why = "bad usable LBA range";
      return;
    }
  if (!array_placement_ok (d, h, c->entries_lba, n, c->lba, c->alternate))
    {
      c->why = "entry array outside the disk or overlapping the usable area";
      return;
    }
  c->header_ok = 1;
}

/* Reads and checks the copy whose header is at lba. Only disk errors are returned; a bad
   copy is reported through c->ok and c->why. */
static grub_err_t
load_copy (struct gpt_disk *d, struct gpt_copy *c, grub_uint64_t lba, int is_primary)
{
  grub_size_t bytes;
  grub_uint64_t n;

  c->lba = lba;
  c->ok = 0;
  c->sector = grub_malloc (d->ss);
  if (!c->sector)
    return grub_errno;
  if (read_lbas (d, lba, d->ss, c->sector))
    {
      /* A copy that cannot be read is a damaged copy, not the end of the boot. */
      grub_errno = GRUB_ERR_NONE;
      c->why = "read error";
      return GRUB_ERR_NONE;
    }
  check_header (d, c, is_primary);
  if (!c->header_ok)
    return GRUB_ERR_NONE;
  array_geometry (d, c->sector, &bytes, &n);
  c->entries = grub_malloc (n << d->log_ss);
  if (!c->entries)
    return grub_errno;
  if (read_lbas (d, c->entries_lba, n << d->log_ss, c->entries))
    {
      grub_errno = GRUB_ERR_NONE;
      c->why = "read error in the entry array";
      return GRUB_ERR_NONE;
    }
  if (crc32 (c->entries, bytes) != le32 (c->sector + HDR_ENTRIES_CRC))
    {
      c->why = "entry array CRC32 mismatch";
      return GRUB_ERR_NONE;
    }
  c->ok = 1;
  return GRUB_ERR_NONE;
}

/* Writes the table of good (whose entries were updated) to both copies: the other copy first,
   then good; each as entry array, then header. */
static grub_err_t
write_both (struct gpt_disk *d, struct gpt_copy *good)
{
  struct gpt_copy *other = (good == &d->primary) ? &d->backup : &d->primary;
  int other_is_primary = (other == &d->primary);
  grub_uint64_t n, other_lba, other_alt, other_entries;
  grub_size_t bytes;
  grub_uint32_t hsize = le32 (good->sector + HDR_SIZE);
  grub_uint32_t array_crc;
  grub_uint8_t *sector;
  grub_err_t err;

  array_geometry (d, good->sector, &bytes, &n);
  array_crc = crc32 (good->entries, bytes);

  other_lba = other_is_primary ? 1 : good->alternate;
  other_alt = other_is_primary ? good->lba : 1;
  /* Keep the other copy's array where its own header puts it when that header is sound and
     the array fits there; else the usual place (right after the primary header, right
     before the backup header). */
  if (other->header_ok
      && array_placement_ok (d, good->sector, other->entries_lba, n, other_lba, other_alt))
    other_entries = other->entries_lba;
  else if (other_is_primary)
    other_entries = 2;
  else if (other_lba > n)
    other_entries = other_lba - n;
  else
    return grub_error (GRUB_ERR_BAD_PART_TABLE, CMD ": no room for the backup entry array "
		       "on %s; nothing written", d->disk->name);
  if (!array_placement_ok (d, good->sector, other_entries, n, other_lba, other_alt))
    return grub_error (GRUB_ERR_BAD_PART_TABLE, CMD ": the %s entry array of %s would "
		       "overlap the partitions; nothing written, repair the table with "
		       "sgdisk -e", other->name, d->disk->name);

  sector = grub_malloc (d->ss);
  if (!sector)
    return grub_errno;
  grub_memcpy (sector, good->sector, d->ss);
  put_le64 (sector + HDR_MY_LBA, other_lba);
  put_le64 (sector + HDR_ALTERNATE_LBA, other_alt);
  put_le64 (sector + HDR_ENTRIES_LBA, other_entries);
  put_le32 (sector + HDR_ENTRIES_CRC, array_crc);
  put_le32 (sector + HDR_CRC, header_crc (sector, hsize));

  put_le32 (good->sector + HDR_ENTRIES_CRC, array_crc);
  put_le32 (good->sector + HDR_CRC, header_crc (good->sector, hsize));

  /* Each copy reaches the medium before the other is touched. */
  err = write_lbas (d, other_entries, n << d->log_ss, good->entries);
  if (!err)
    err = write_lbas (d, other_lba, d->ss, sector);
  if (!err)
    {
      flush_disk (d);
      err = write_lbas (d, good->entries_lba, n << d->log_ss, good->entries);
    }
  if (!err)
    err = write_lbas (d, good->lba, d->ss, good->sector);
  if (!err)
    flush_disk (d);
  grub_free (sector);
  return err;
}

/* The disk part of a GRUB device name: "hd0" of "hd0,gpt1" or "(hd0,gpt1)". */
static char *
disk_of (const char *root)
{
  const char *p;
  grub_size_t n;

  if (*root == '(')
    root++;
  for (p = root; *p && *p != ',' && *p != ')'; p++)
    if (*p == '\\' && p[1])
      p++;
  n = p - root;
  if (n == 0)
    return NULL;
  return grub_strndup (root, n);
}

static grub_err_t
grub_cmd_gptprio_next (grub_extcmd_context_t ctxt, int argc, char **args __attribute__ ((unused)))
{
  struct grub_arg_list *state = ctxt->state;
  const char *devvar = state[OPT_DEVICE_VAR].set ? state[OPT_DEVICE_VAR].arg : NULL;
  const char *uuidvar = state[OPT_UUID_VAR].set ? state[OPT_UUID_VAR].arg : NULL;
  const char *type_text = state[OPT_TYPE].set ? state[OPT_TYPE].arg : default_type;
  grub_uint8_t type[16];
  struct gpt_disk d;
  struct gpt_copy *good;
  const char *root;
  char *diskname = NULL, *devname = NULL;
  char uuid[GUID_STRLEN + 1];
  grub_uint64_t attr, backup_lba;
  grub_uint32_t i, count, best = 0;
  int found = 0, best_prio = 0, tries;
  grub_err_t err = GRUB_ERR_NONE;

  grub_memset (&d, 0, sizeof (d));
  d.primary.name = "primary";
  d.backup.name = "backup";

  if (argc != 0)
    return grub_error (GRUB_ERR_BAD_ARGUMENT, CMD ": unexpected argument; usage: "
		       CMD " -d DEVVAR -u UUIDVAR [-t TYPEGUID]");
  if (!devvar && !uuidvar)
    return grub_error (GRUB_ERR_BAD_ARGUMENT, CMD ": give -d DEVVAR and/or -u UUIDVAR "
		       "to receive the chosen partition");
  if (!parse_guid (type_text, type))
    return grub_error (GRUB_ERR_BAD_ARGUMENT, CMD ": -t %s is not a GUID "
		       "(want XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX)", type_text);

  root = grub_env_get ("root");
  if (!root || !*root)
    return grub_error (GRUB_ERR_BAD_DEVICE, CMD ": $root is not set; set root to the disk "
		       "that holds the /usr partitions (e.g. set root=hd0)");
  diskname = disk_of (root);
  if (!diskname)
    return grub_error (GRUB_ERR_BAD_DEVICE, CMD ": cannot tell the disk of root=%s", root);

  d.disk = grub_disk_open (diskname);
  if (!d.disk)
    {
      err = grub_errno;
      goto out;
    }
  d.log_ss = d.disk->log_sector_size;
  if (d.log_ss < MIN_LOG_SECTOR || d.log_ss > MAX_LOG_SECTOR)
    {
      err = grub_error (GRUB_ERR_BAD_DEVICE, CMD ": %s has %u-byte sectors; only 512 to 4096 "
			"are supported", diskname, 1U << d.log_ss);
      goto out;
    }
  d.ss = (grub_size_t) 1 << d.log_ss;
  /* The whole disk's size in its own logical sectors (grub_disk_native_sectors would give
     512-byte units). */
  d.total = d.disk->total_sectors;
  if (d.total == GRUB_DISK_SIZE_UNKNOWN)
    d.total = 0;

  err = load_copy (&d, &d.primary, 1, 1);
  if (err)
    goto out;
  if (d.primary.header_ok)
    backup_lba = d.primary.alternate;
  else if (d.total > 2)
    backup_lba = d.total - 1;
  else
    backup_lba = 0;
  if (backup_lba)
    {
      err = load_copy (&d, &d.backup, backup_lba, 0);
      if (err)
	goto out;
    }
  else
    d.backup.why = "disk size unknown, so the backup header cannot be found";

  good = d.primary.ok ? &d.primary : d.backup.ok ? &d.backup : NULL;
  if (!good)
    {
      err = grub_error (GRUB_ERR_BAD_PART_TABLE, CMD ": both GPT copies of %s are damaged "
			"(primary: %s; backup: %s); nothing written. Repair the table from a "
			"rescue system", diskname, d.primary.why, d.backup.why);
      goto out;
    }

  count = le32 (good->sector + HDR_NUM_ENTRIES);
  for (i = 0; i < count; i++)
    {
      const grub_uint8_t *e = good->entries + (grub_size_t) i * ENT_SIZE;
      int prio;

      if (grub_memcmp (e + ENT_TYPE, type, 16) != 0)
	continue;
      attr = le64 (e + ENT_ATTRIBUTES);
      prio = (int) ((attr >> PRIO_SHIFT) & FIELD_MASK);
      tries = (int) ((attr >> TRIES_SHIFT) & FIELD_MASK);
      if (prio == 0 || (tries == 0 && !((attr >> SUCCESSFUL_SHIFT) & 1)))
	continue;
      if (!found || prio > best_prio)
	{
	  found = 1;
	  best = i;
	  best_prio = prio;
	}
    }
  if (!found)
    {
      err = grub_error (GRUB_ERR_UNKNOWN_DEVICE, CMD ": no bootable usr partition on %s: no "
			"entry of type %s has priority > 0 and tries left or successful; "
			"nothing written", diskname, type_text);
      goto out;
    }

  {
    grub_uint8_t *e = good->entries + (grub_size_t) best * ENT_SIZE;

    attr = le64 (e + ENT_ATTRIBUTES);
    tries = (int) ((attr >> TRIES_SHIFT) & FIELD_MASK);
    if (tries > 0)
      {
	attr = (attr & ~(FIELD_MASK << TRIES_SHIFT))
	  | ((grub_uint64_t) (tries - 1) << TRIES_SHIFT);
	put_le64 (e + ENT_ATTRIBUTES, attr);
	err = write_both (&d, good);
	if (err)
	  goto out;
      }
    format_guid (e + ENT_UNIQUE, uuid);
  }

  devname = grub_xasprintf ("%s,gpt%u", diskname, best + 1);
  if (!devname)
    {
      err = grub_errno;
      goto out;
    }
  if (devvar && (err = grub_env_set (devvar, devname)))
    goto out;
  if (uuidvar && (err = grub_env_set (uuidvar, uuid)))
    goto out;

 out:
  grub_free (devname);
  grub_free (d.primary.sector);
  grub_free (d.primary.entries);
  grub_free (d.backup.sector);
  grub_free (d.backup.entries);
  if (d.disk)
    grub_disk_close (d.disk);
  grub_free (diskname);
  return err;
}

static grub_extcmd_t cmd_next;

GRUB_MOD_INIT (gptprio)
{
  cmd_next = grub_register_extcmd (CMD, grub_cmd_gptprio_next, 0,
				   N_("-d DEVVAR -u UUIDVAR [-t TYPEGUID]"),
				   N_("Choose the A/B partition to boot by GPT priority, tries "
				      "and successful bits; decrement its tries on disk."),
				   options);
}

GRUB_MOD_FINI (gptprio)
{
  grub_unregister_extcmd (cmd_next);
}
