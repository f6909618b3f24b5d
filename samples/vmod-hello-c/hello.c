/*
 * The hello sample VMOD in C: `hello.hello(name)`, `hello.lower(s)` and a
 * `hello.greeter` object, plus the `shellac:vmod/lifecycle` export and the
 * workspace arena that the Rust SDK (vmods/sdk) gives Rust VMODs.
 *
 * Bindings: build.sh runs `wit-bindgen c`, which writes vmod_hello.h,
 * vmod_hello.c and vmod_hello_component_type.o into a temporary directory.
 * See wit/README.md, "Writing a VMOD in C".
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmod_hello.h"

/* ------------------------------------------------------------------------
 * The workspace arena (the C counterpart of vmods/sdk/src/arena.rs).
 *
 *   __heap_base ... permanent (load, vcl_init) ... | floor ... task ... | cur
 *
 * Before `warm` every allocation is permanent. `warm` records `cur` as the
 * floor; `end-task` sets `cur` back to it. `free` only pops the very last
 * allocation; `realloc` of the last allocation grows in place. When memory
 * cannot grow (the host's memory cap) we trap: the task fails, the host
 * replaces the instance. Never returns NULL.
 *
 * Every allocation goes through here: the host's `cabi_realloc` for the
 * arguments it passes in, our results (the host calls the generated
 * `cabi_post_*` functions, which `free` them), and any malloc of ours.
 * ------------------------------------------------------------------------ */

#define PAGE 65536u
#define MALLOC_ALIGN 16u /* alignof(max_align_t) on wasm32 */

extern unsigned char __heap_base;

static uintptr_t arena_cur;   /* next free byte */
static uintptr_t arena_end;   /* end of linear memory */
static uintptr_t arena_floor; /* recorded at warm; 0 before */
static uintptr_t arena_last;  /* start of the last allocation, 0 if unknown */
static int is_warm;

__attribute__((cold, noreturn)) static void out_of_memory(void) {
	__builtin_trap();
}

static void arena_init(void) {
	if (arena_end == 0) {
		arena_cur = (uintptr_t)&__heap_base;
		arena_end = (uintptr_t)__builtin_wasm_memory_size(0) * PAGE;
	}
}

/* Makes memory reach new_end (growing it or trapping); new_end becomes cur. */
static void reserve(uintptr_t new_end) {
	if (new_end > arena_end) {
		size_t pages = (new_end - arena_end + PAGE - 1) / PAGE;
		if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1)
			out_of_memory();
		arena_end += pages * PAGE;
	}
	arena_cur = new_end;
}

static void *bump(size_t size, size_t align) {
	arena_init();
	if (align == 0)
		align = 1;
	uintptr_t start = (arena_cur + (align - 1)) & ~(uintptr_t)(align - 1);
	if (start < arena_cur || start + size < start)
		out_of_memory();
	reserve(start + size);
	arena_last = start;
	return (void *)start;
}

/* Whether p is the last allocation, above the floor (may be resized/popped). */
static int is_last(uintptr_t p) {
	return p != 0 && p == arena_last && p >= arena_floor;
}

/* What the canonical ABI uses for every allocation in our memory: the
 * arguments the host passes in, and the generated helpers. This strong
 * definition replaces the weak one in gen/vmod_hello.c (which calls
 * realloc and ignores `align`). */
__attribute__((__export_name__("cabi_realloc")))
void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size) {
	arena_init();
	if (new_size == 0)
		return (void *)align;
	uintptr_t p = (uintptr_t)ptr;
	if (ptr != NULL && is_last(p) && p + old_size == arena_cur) {
		if (p + new_size < p)
			out_of_memory();
		reserve(p + new_size);
		return ptr;
	}
	void *n = bump(new_size, align);
	if (ptr != NULL && old_size != 0)
		memcpy(n, ptr, old_size < new_size ? old_size : new_size);
	return n;
}

void *malloc(size_t size) {
	return bump(size ? size : 1, MALLOC_ALIGN);
}

void *calloc(size_t n, size_t size) {
	if (size != 0 && n > (size_t)-1 / size)
		out_of_memory();
	/* Memory above the floor is reused dirty after end-task: zero it. */
	void *p = malloc(n * size);
	memset(p, 0, n * size);
	return p;
}

void *realloc(void *ptr, size_t size) {
	if (ptr == NULL)
		return malloc(size);
	uintptr_t p = (uintptr_t)ptr;
	if (is_last(p)) {
		if (p + size < p)
			out_of_memory();
		reserve(p + size);
		return ptr;
	}
	/* The old size is unknown, but everything from ptr to cur is ours and
	 * readable: copying min(size, cur - ptr) bytes copies the old block. */
	size_t avail = arena_cur - p;
	void *n = malloc(size);
	memcpy(n, ptr, avail < size ? avail : size);
	return n;
}

void free(void *ptr) {
	uintptr_t p = (uintptr_t)ptr;
	if (is_last(p)) {
		arena_cur = p;
		arena_last = 0;
	}
}

void abort(void) {
	__builtin_trap();
}

static void arena_set_floor(void) {
	arena_init();
	arena_floor = arena_cur;
	arena_last = 0;
}

static void arena_reset(void) {
	if (arena_floor != 0) {
		arena_cur = arena_floor;
		arena_last = 0;
	}
}

/* ------------------------------------------------------------------------
 * shellac:vmod/lifecycle (what shellac_vmod_sdk::lifecycle! does in Rust)
 * ------------------------------------------------------------------------ */

bool exports_shellac_vmod_lifecycle_on_event(exports_shellac_vmod_lifecycle_event_t event,
                                             vmod_hello_string_t *err) {
	(void)err; /* on error: vmod_hello_string_dup(err, "why"); return false; */
	switch (event) {
	case SHELLAC_VMOD_TYPES_EVENT_WARM:
		if (!is_warm) {
			is_warm = 1;
			arena_set_floor(); /* what exists now is every task's image */
		} else {
			arena_reset();
		}
		break;
	case SHELLAC_VMOD_TYPES_EVENT_LOAD:
	case SHELLAC_VMOD_TYPES_EVENT_COLD:
	case SHELLAC_VMOD_TYPES_EVENT_DISCARD:
		break;
	}
	return true;
}

void exports_shellac_vmod_lifecycle_end_task(void) {
	if (is_warm)
		arena_reset();
}

/* ------------------------------------------------------------------------
 * vmod:hello/hello
 *
 * Ownership as wit-bindgen's C bindings define it: string arguments are the
 * callee's (free them when done; with the arena this is nearly free), a
 * returned string must be allocated (cabi_realloc/malloc); the generated
 * cabi_post_* function frees it after the host copied it.
 * ------------------------------------------------------------------------ */

/* ret = a + s + b */
static void concat3(vmod_hello_string_t *ret, const uint8_t *a, size_t alen,
                    const vmod_hello_string_t *s, const uint8_t *b, size_t blen) {
	size_t n = alen + s->len + blen;
	uint8_t *p = cabi_realloc(NULL, 0, 1, n);
	memcpy(p, a, alen);
	memcpy(p + alen, s->ptr, s->len);
	memcpy(p + alen + s->len, b, blen);
	ret->ptr = p;
	ret->len = n;
}

/* `hello.hello("World")` is "Hello, World!". */
void exports_vmod_hello_hello_hello(vmod_hello_string_t *name, vmod_hello_string_t *ret) {
	concat3(ret, (const uint8_t *)"Hello, ", 7, name, (const uint8_t *)"!", 1);
	vmod_hello_string_free(name);
}

/* `hello.lower("AbC")` is "abc" (ASCII, as std.tolower). */
void exports_vmod_hello_hello_lower(vmod_hello_string_t *s, vmod_hello_string_t *ret) {
	uint8_t *p = cabi_realloc(NULL, 0, 1, s->len);
	for (size_t i = 0; i < s->len; i++) {
		uint8_t c = s->ptr[i];
		p[i] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c - 'A' + 'a') : c;
	}
	ret->ptr = p;
	ret->len = s->len;
	vmod_hello_string_free(s);
}

/* The greeter object. Built in vcl_init, i.e. before `warm`: its memory
 * (this struct and the greeting the host passed in) is below the floor and
 * lasts as long as the instance. */
struct exports_vmod_hello_hello_greeter_t {
	vmod_hello_string_t greeting;
};

exports_vmod_hello_hello_own_greeter_t
exports_vmod_hello_hello_constructor_greeter(vmod_hello_string_t *greeting) {
	exports_vmod_hello_hello_greeter_t *g = malloc(sizeof *g);
	g->greeting = *greeting; /* keep the argument: it is ours */
	return exports_vmod_hello_hello_greeter_new(g);
}

/* `g.greet("World")` is "Howdy, World!". */
void exports_vmod_hello_hello_method_greeter_greet(exports_vmod_hello_hello_borrow_greeter_t self,
                                                   vmod_hello_string_t *name,
                                                   vmod_hello_string_t *ret) {
	const vmod_hello_string_t *g = &self->greeting;
	size_t n = g->len + 2 + name->len + 1;
	uint8_t *p = cabi_realloc(NULL, 0, 1, n);
	memcpy(p, g->ptr, g->len);
	memcpy(p + g->len, ", ", 2);
	memcpy(p + g->len + 2, name->ptr, name->len);
	p[n - 1] = '!';
	ret->ptr = p;
	ret->len = n;
	vmod_hello_string_free(name);
}

void exports_vmod_hello_hello_greeter_destructor(exports_vmod_hello_hello_greeter_t *rep) {
	(void)rep; /* arena memory: nothing to free */
}
