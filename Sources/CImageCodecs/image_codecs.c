#include "image_codecs.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h>  // before jpeglib.h, which uses FILE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

static int fail(char* error, int capacity, int code, const char* format, const char* detail) {
  if (error && capacity > 0) snprintf(error, (size_t)capacity, format, detail ? detail : "");
  return code;
}

void ic_free(ic_image* image) {
  if (!image) return;
  free(image->pixels);
  image->pixels = NULL;
}

// Pixel buffers: refuse sizes whose byte count would not fit comfortably.
// Pillow's limit (twice its DecompressionBombWarning threshold): a few hundred bytes of JPEG can declare a
// 64000 x 64000 image, and the model resizes every picture to a few hundred pixels anyway.
#define IC_MAX_PIXELS ((size_t)178956970)

static uint8_t* alloc_pixels(size_t width, size_t height, size_t bytes_per_pixel) {
  if (width == 0 || height == 0) return NULL;
  if (width > ((size_t)1 << 20) || height > ((size_t)1 << 20) || width * height > IC_MAX_PIXELS) return NULL;
  return (uint8_t*)malloc(width * height * bytes_per_pixel);
}

// ---- Files

static int read_file(const char* path, uint8_t** data, size_t* size, char* error, int cap) {
  *data = NULL;
  *size = 0;
  if (!path) return fail(error, cap, IC_ERR_ARGUMENT, "no path given%s", NULL);
  FILE* f = fopen(path, "rb");
  if (!f) return fail(error, cap, IC_ERR_IO, "cannot open file: %s", strerror(errno));
  size_t capacity = 1 << 16, used = 0;
  uint8_t* buffer = (uint8_t*)malloc(capacity);
  while (buffer) {
    if (used == capacity) {
      uint8_t* bigger = (uint8_t*)realloc(buffer, capacity * 2);
      if (!bigger) {
        free(buffer);
        buffer = NULL;
        break;
      }
      buffer = bigger;
      capacity *= 2;
    }
    size_t n = fread(buffer + used, 1, capacity - used, f);
    used += n;
    if (n == 0) break;
  }
  int failed = ferror(f);
  int saved = errno;
  fclose(f);
  if (!buffer) return fail(error, cap, IC_ERR_MEMORY, "out of memory reading the file%s", NULL);
  if (failed) {
    free(buffer);
    return fail(error, cap, IC_ERR_IO, "cannot read file: %s", strerror(saved));
  }
  *data = buffer;
  *size = used;
  return IC_OK;
}

// ---- PNG

typedef struct {
  const uint8_t* data;
  size_t size;
  size_t position;
  int truncated;
  int out_of_memory;
  char message[256];
} png_source;

static void png_on_error(png_structp png, png_const_charp message) {
  png_source* source = (png_source*)png_get_error_ptr(png);
  snprintf(source->message, sizeof(source->message), "%s", message);
  png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp message) {
  (void)png;
  (void)message;
}

static void png_read_memory(png_structp png, png_bytep out, size_t length) {
  png_source* source = (png_source*)png_get_io_ptr(png);
  if (length > source->size - source->position) {
    source->truncated = 1;
    png_error(png, "unexpected end of data");
  }
  memcpy(out, source->data + source->position, length);
  source->position += length;
}

int ic_decode_png(const uint8_t* data, size_t size, ic_image* out, char* error, int cap) {
  if (!out || (!data && size > 0)) return fail(error, cap, IC_ERR_ARGUMENT, "bad arguments%s", NULL);
  memset(out, 0, sizeof(*out));
  png_source source;
  memset(&source, 0, sizeof(source));
  source.data = data;
  source.size = size;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &source, png_on_error, png_on_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!png || !info) {
    if (png) png_destroy_read_struct(&png, NULL, NULL);
    return fail(error, cap, IC_ERR_MEMORY, "out of memory%s", NULL);
  }
  // Written after setjmp and read in the handler: volatile.
  uint8_t* volatile pixels = NULL;
  uint8_t* volatile wide = NULL;
  png_bytep* volatile rows = NULL;
  volatile int rows_done = 0;
  volatile int width = 0, height = 0;
  if (setjmp(png_jmpbuf(png))) {
    if (rows_done) {
      // Only the chunks after the image data are missing or damaged; Pillow keeps such images too.
      png_destroy_read_struct(&png, &info, NULL);
      free(wide);
      free(rows);
      out->width = width;
      out->height = height;
      out->pixels = pixels;
      return IC_OK;
    }
    png_destroy_read_struct(&png, &info, NULL);
    free(pixels);
    free(wide);
    free(rows);
    if (source.out_of_memory)
      return fail(error, cap, IC_ERR_MEMORY, "image too large (%s; at most 178956970 pixels, as Pillow) or out of memory", source.message);
    if (source.truncated) return fail(error, cap, IC_ERR_TRUNCATED, "truncated PNG file (data ends early)%s", NULL);
    return fail(error, cap, IC_ERR_CORRUPT, "corrupt PNG file (libpng: %s)", source.message);
  }
  png_set_read_fn(png, &source, png_read_memory);
  png_read_info(png, info);
  int color = png_get_color_type(png, info);
  int depth = png_get_bit_depth(png, info);
  width = (int)png_get_image_width(png, info);
  height = (int)png_get_image_height(png, info);
  png_set_interlace_handling(png);
  // Pillow opens 16-bit grey as mode I;16, and convert("RGB") clips it to 255 (tRNS does not change the mode).
  int gray16 = depth == 16 && color == PNG_COLOR_TYPE_GRAY;
  if (!gray16) {
    if (depth == 16) png_set_strip_16(png);  // the high byte, as Pillow's ";16B" unpackers keep
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_strip_alpha(png);  // alpha (and tRNS) is dropped, not composited
  }
  png_read_update_info(png, info);
  size_t row_bytes = png_get_rowbytes(png, info);
  size_t expected = (size_t)width * (gray16 ? 2 : 3);
  if (row_bytes != expected) png_error(png, "unexpected row layout after conversion to RGB");
  pixels = alloc_pixels((size_t)width, (size_t)height, 3);
  if (gray16 && pixels) wide = alloc_pixels((size_t)width, (size_t)height, 2);
  rows = (png_bytep*)malloc(sizeof(png_bytep) * (size_t)height);
  if (!pixels || !rows || (gray16 && !wide)) {
    source.out_of_memory = 1;
    char size_text[64];  // copied into source.message by png_on_error before it jumps
    snprintf(size_text, sizeof(size_text), "%d x %d pixels", width, height);
    png_error(png, size_text);
  }
  uint8_t* target = gray16 ? wide : pixels;
  for (int y = 0; y < height; ++y) rows[y] = target + (size_t)y * row_bytes;
  png_read_image(png, rows);
  if (gray16) {
    for (size_t i = 0; i < (size_t)width * (size_t)height; ++i) {
      unsigned v = ((unsigned)wide[2 * i] << 8) | wide[2 * i + 1];  // big-endian samples
      uint8_t g = v > 255 ? 255 : (uint8_t)v;
      pixels[3 * i] = pixels[3 * i + 1] = pixels[3 * i + 2] = g;
    }
  }
  rows_done = 1;
  png_read_end(png, NULL);
  png_destroy_read_struct(&png, &info, NULL);
  free(wide);
  free(rows);
  out->width = width;
  out->height = height;
  out->pixels = pixels;
  return IC_OK;
}

int ic_read_png(const char* path, ic_image* out, char* error, int cap) {
  uint8_t* data;
  size_t size;
  int rc = read_file(path, &data, &size, error, cap);
  if (rc != IC_OK) return rc;
  rc = ic_decode_png(data, size, out, error, cap);
  free(data);
  return rc;
}

// Encoder output: a growable buffer filled by libpng's write callback.
typedef struct {
  uint8_t* data;
  size_t size;
  size_t capacity;
  int out_of_memory;
  char message[256];
} png_sink;

static void png_sink_write(png_structp png, png_bytep bytes, png_size_t count) {
  png_sink* sink = (png_sink*)png_get_error_ptr(png);
  if (sink->size + count > sink->capacity) {
    size_t capacity = sink->capacity ? sink->capacity : 1 << 16;
    while (capacity < sink->size + count) capacity *= 2;
    uint8_t* bigger = (uint8_t*)realloc(sink->data, capacity);
    if (!bigger) {
      sink->out_of_memory = 1;
      png_error(png, "out of memory");
    }
    sink->data = bigger;
    sink->capacity = capacity;
  }
  memcpy(sink->data + sink->size, bytes, count);
  sink->size += count;
}

static void png_sink_flush(png_structp png) { (void)png; }

static void png_sink_on_error(png_structp png, png_const_charp message) {
  png_sink* sink = (png_sink*)png_get_error_ptr(png);
  snprintf(sink->message, sizeof(sink->message), "%s", message);
  longjmp(png_jmpbuf(png), 1);
}

static void png_sink_on_warning(png_structp png, png_const_charp message) {
  (void)png;
  (void)message;
}

int ic_encode_png(const uint8_t* rgb, int width, int height, uint8_t** out, size_t* out_size, char* error, int cap) {
  if (out) *out = NULL;
  if (out_size) *out_size = 0;
  if (!rgb || !out || !out_size || width <= 0 || height <= 0 || width > (1 << 20) || height > (1 << 20)) {
    return fail(error, cap, IC_ERR_ARGUMENT, "bad image size or arguments%s", NULL);
  }
  png_sink sink;
  memset(&sink, 0, sizeof(sink));
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink, png_sink_on_error, png_sink_on_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!png || !info) {
    if (png) png_destroy_write_struct(&png, NULL);
    return fail(error, cap, IC_ERR_MEMORY, "out of memory%s", NULL);
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    free(sink.data);
    if (sink.out_of_memory) return fail(error, cap, IC_ERR_MEMORY, "out of memory encoding the PNG%s", NULL);
    return fail(error, cap, IC_ERR_IO, "PNG encoding failed (libpng: %s)", sink.message);
  }
  png_set_write_fn(png, &sink, png_sink_write, png_sink_flush);
  png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < height; ++y) png_write_row(png, (png_const_bytep)(rgb + (size_t)y * (size_t)width * 3));
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  *out = sink.data;
  *out_size = sink.size;
  return IC_OK;
}

int ic_write_png(const char* path, const uint8_t* rgb, int width, int height, char* error, int cap) {
  if (!path) return fail(error, cap, IC_ERR_ARGUMENT, "bad image size or arguments%s", NULL);
  uint8_t* encoded = NULL;
  size_t size = 0;
  int rc = ic_encode_png(rgb, width, height, &encoded, &size, error, cap);
  if (rc != IC_OK) return rc;
  FILE* f = fopen(path, "wb");
  if (!f) {
    free(encoded);
    return fail(error, cap, IC_ERR_IO, "cannot create file: %s", strerror(errno));
  }
  int failed = fwrite(encoded, 1, size, f) != size;
  free(encoded);
  failed = failed || fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
  int saved = errno;
  if (fclose(f) != 0 && !failed) {
    failed = 1;
    saved = errno;
  }
  if (failed) return fail(error, cap, IC_ERR_IO, "write failed: %s", strerror(saved));
  return IC_OK;
}

// ---- JPEG

typedef struct {
  struct jpeg_error_mgr base;
  jmp_buf jump;
  int truncated;
  char message[JMSG_LENGTH_MAX];
} jpeg_error_state;

static void jpeg_on_error(j_common_ptr cinfo) {
  jpeg_error_state* state = (jpeg_error_state*)cinfo->err;
  (*cinfo->err->format_message)(cinfo, state->message);
  longjmp(state->jump, 1);
}

// Warnings about corrupt data are ignored (libjpeg recovers, and Pillow decodes such files), except the end of the
// data arriving before the end-of-image marker, which Pillow reports as a truncated image.
static void jpeg_on_message(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
    jpeg_error_state* state = (jpeg_error_state*)cinfo->err;
    state->truncated = 1;
    (*cinfo->err->format_message)(cinfo, state->message);
    longjmp(state->jump, 1);
  }
}

static inline uint8_t muldiv255(unsigned a, unsigned b) {
  unsigned t = a * b + 128;
  return (uint8_t)(((t >> 8) + t) >> 8);
}

int ic_decode_jpeg(const uint8_t* data, size_t size, ic_image* out, char* error, int cap) {
  if (!out || (!data && size > 0)) return fail(error, cap, IC_ERR_ARGUMENT, "bad arguments%s", NULL);
  memset(out, 0, sizeof(*out));
  struct jpeg_decompress_struct cinfo;
  jpeg_error_state state;
  memset(&state, 0, sizeof(state));
  cinfo.err = jpeg_std_error(&state.base);
  state.base.error_exit = jpeg_on_error;
  state.base.emit_message = jpeg_on_message;
  uint8_t* volatile pixels = NULL;
  uint8_t* volatile row = NULL;
  volatile int code = IC_ERR_CORRUPT;
  if (setjmp(state.jump)) {
    jpeg_destroy_decompress(&cinfo);
    free(pixels);
    free(row);
    if (state.truncated) return fail(error, cap, IC_ERR_TRUNCATED, "truncated JPEG file (data ends early)%s", NULL);
    if (code == IC_ERR_CORRUPT) return fail(error, cap, code, "corrupt JPEG file (libjpeg: %s)", state.message);
    return fail(error, cap, code, "%s", state.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, (unsigned char*)data, (unsigned long)size);
  jpeg_read_header(&cinfo, TRUE);
  int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  if (cmyk) {
    cinfo.out_color_space = JCS_CMYK;
  } else if (cinfo.num_components == 1 || cinfo.num_components == 3) {
    cinfo.out_color_space = JCS_RGB;
  } else {
    code = IC_ERR_UNSUPPORTED;
    snprintf(state.message, sizeof(state.message), "unsupported JPEG colour space (%d components)",
             cinfo.num_components);
    longjmp(state.jump, 1);
  }
  jpeg_start_decompress(&cinfo);
  int width = (int)cinfo.output_width, height = (int)cinfo.output_height;
  if (cinfo.output_components != (cmyk ? 4 : 3)) {
    code = IC_ERR_UNSUPPORTED;
    snprintf(state.message, sizeof(state.message), "unexpected JPEG output (%d components)", cinfo.output_components);
    longjmp(state.jump, 1);
  }
  pixels = alloc_pixels((size_t)width, (size_t)height, 3);
  if (cmyk && pixels) row = (uint8_t*)malloc((size_t)width * 4);
  if (!pixels || (cmyk && !row)) {
    code = IC_ERR_MEMORY;
    snprintf(state.message, sizeof(state.message), "image too large (%d x %d pixels; at most 178956970, as Pillow) or out of memory",
             width, height);
    longjmp(state.jump, 1);
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t* target = pixels + (size_t)cinfo.output_scanline * (size_t)width * 3;
    JSAMPROW scanline = cmyk ? row : target;
    jpeg_read_scanlines(&cinfo, &scanline, 1);
    if (cmyk) {
      // Pillow reads CMYK JPEGs as "CMYK;I" (Adobe polarity: stored inverted), then cmyk2rgb.
      for (int x = 0; x < width; ++x) {
        unsigned nk = row[4 * x + 3];  // 255 - k, with k = 255 - stored
        for (int c = 0; c < 3; ++c) {
          int v = (int)nk - (int)muldiv255(255u - row[4 * x + c], nk);
          target[3 * x + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
      }
    }
  }
  jpeg_finish_decompress(&cinfo);  // reads up to the end marker: a file without one is truncated, as for Pillow
  jpeg_destroy_decompress(&cinfo);
  free(row);
  out->width = width;
  out->height = height;
  out->pixels = pixels;
  return IC_OK;
}

int ic_read_jpeg(const char* path, ic_image* out, char* error, int cap) {
  uint8_t* data;
  size_t size;
  int rc = read_file(path, &data, &size, error, cap);
  if (rc != IC_OK) return rc;
  rc = ic_decode_jpeg(data, size, out, error, cap);
  free(data);
  return rc;
}
