#include "image_codecs.h"

#include <stdio.h>  // before jpeglib.h, which uses FILE
#include <jpeglib.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

static void set_error(char* error, int capacity, const char* message) {
  if (error && capacity > 0) {
    strncpy(error, message, (size_t)capacity - 1);
    error[capacity - 1] = 0;
  }
}

void ic_free(ic_image* image) {
  free(image->pixels);
  image->pixels = NULL;
}

// ---- PNG

typedef struct {
  char message[256];
} png_error_state;

static void png_error_handler(png_structp png, png_const_charp message) {
  png_error_state* state = (png_error_state*)png_get_error_ptr(png);
  snprintf(state->message, sizeof(state->message), "%s", message);
  png_longjmp(png, 1);
}

static void png_warning_handler(png_structp png, png_const_charp message) {
  (void)png;
  (void)message;
}

int ic_read_png(const char* path, ic_image* out, char* error, int cap) {
  memset(out, 0, sizeof(*out));
  FILE* f = fopen(path, "rb");
  if (!f) {
    set_error(error, cap, "cannot open file");
    return -1;
  }
  png_error_state state = {{0}};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, png_error_handler, png_warning_handler);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  uint8_t* pixels = NULL;
  png_bytep* rows = NULL;
  if (!png || !info) {
    if (png) png_destroy_read_struct(&png, NULL, NULL);
    fclose(f);
    set_error(error, cap, "out of memory");
    return -1;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, NULL);
    fclose(f);
    free(pixels);
    free(rows);
    set_error(error, cap, state.message[0] ? state.message : "corrupt PNG");
    return -1;
  }
  png_init_io(png, f);
  png_read_info(png, info);
  int color = png_get_color_type(png, info);
  int depth = png_get_bit_depth(png, info);
  // Pillow opens 16-bit grey as mode I;16 and clips it to 255 when converting; other 16-bit data keeps the high byte.
  int gray16 = depth == 16 && color == PNG_COLOR_TYPE_GRAY && !png_get_valid(png, info, PNG_INFO_tRNS);
  if (gray16) {
    png_set_swap(png);
    png_read_update_info(png, info);
    int w = (int)png_get_image_width(png, info), h = (int)png_get_image_height(png, info);
    uint16_t* gray = (uint16_t*)malloc((size_t)w * h * 2);
    rows = (png_bytep*)malloc(sizeof(png_bytep) * (size_t)h);
    pixels = (uint8_t*)malloc((size_t)w * h * 3);
    if (!gray || !rows || !pixels) { free(gray); png_error(png, "out of memory"); }
    for (int y = 0; y < h; ++y) rows[y] = (png_bytep)(gray + (size_t)y * w);
    png_read_image(png, rows);
    for (size_t i = 0; i < (size_t)w * h; ++i) {
      uint8_t v = gray[i] > 255 ? 255 : (uint8_t)gray[i];
      pixels[3 * i] = pixels[3 * i + 1] = pixels[3 * i + 2] = v;
    }
    free(gray);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    fclose(f);
    free(rows);
    out->width = w;
    out->height = h;
    out->pixels = pixels;
    return 0;
  }
  if (depth == 16) png_set_strip_16(png);  // keeps the high byte, as Pillow does
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  if (color & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  int width = (int)png_get_image_width(png, info), height = (int)png_get_image_height(png, info);
  if (png_get_rowbytes(png, info) != (size_t)width * 3) {
    png_error(png, "unexpected row layout after conversion to RGB");
  }
  pixels = (uint8_t*)malloc((size_t)width * height * 3);
  rows = (png_bytep*)malloc(sizeof(png_bytep) * (size_t)height);
  if (!pixels || !rows) png_error(png, "out of memory");
  for (int y = 0; y < height; ++y) rows[y] = pixels + (size_t)y * width * 3;
  png_read_image(png, rows);
  png_read_end(png, NULL);
  png_destroy_read_struct(&png, &info, NULL);
  fclose(f);
  free(rows);
  out->width = width;
  out->height = height;
  out->pixels = pixels;
  return 0;
}

int ic_write_png(const char* path, const uint8_t* rgb, int width, int height, char* error, int cap) {
  FILE* f = fopen(path, "wb");
  if (!f) {
    set_error(error, cap, "cannot create file");
    return -1;
  }
  png_error_state state = {{0}};
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &state, png_error_handler, png_warning_handler);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!png || !info) {
    if (png) png_destroy_write_struct(&png, NULL);
    fclose(f);
    set_error(error, cap, "out of memory");
    return -1;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    fclose(f);
    set_error(error, cap, state.message[0] ? state.message : "PNG write failed");
    return -1;
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < height; ++y) png_write_row(png, (png_const_bytep)(rgb + (size_t)y * width * 3));
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  if (fclose(f) != 0) {
    set_error(error, cap, "write failed");
    return -1;
  }
  return 0;
}

// ---- JPEG

typedef struct {
  struct jpeg_error_mgr base;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
} jpeg_error_state;

static void jpeg_error_exit(j_common_ptr cinfo) {
  jpeg_error_state* state = (jpeg_error_state*)cinfo->err;
  (*cinfo->err->format_message)(cinfo, state->message);
  longjmp(state->jump, 1);
}

static void jpeg_quiet(j_common_ptr cinfo, int level) {
  (void)cinfo;
  (void)level;
}

int ic_read_jpeg(const char* path, ic_image* out, char* error, int cap) {
  memset(out, 0, sizeof(*out));
  FILE* f = fopen(path, "rb");
  if (!f) {
    set_error(error, cap, "cannot open file");
    return -1;
  }
  struct jpeg_decompress_struct cinfo;
  jpeg_error_state state;
  memset(&state, 0, sizeof(state));
  cinfo.err = jpeg_std_error(&state.base);
  state.base.error_exit = jpeg_error_exit;
  state.base.emit_message = jpeg_quiet;
  uint8_t* volatile pixels = NULL;
  if (setjmp(state.jump)) {
    jpeg_destroy_decompress(&cinfo);
    fclose(f);
    free(pixels);
    set_error(error, cap, state.message[0] ? state.message : "corrupt JPEG");
    return -1;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, f);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    snprintf(state.message, sizeof(state.message), "CMYK JPEG is not supported");
    longjmp(state.jump, 1);
  }
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  int width = (int)cinfo.output_width, height = (int)cinfo.output_height;
  pixels = (uint8_t*)malloc((size_t)width * height * 3);
  if (!pixels) {
    snprintf(state.message, sizeof(state.message), "out of memory");
    longjmp(state.jump, 1);
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = pixels + (size_t)cinfo.output_scanline * width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  fclose(f);
  out->width = width;
  out->height = height;
  out->pixels = pixels;
  return 0;
}
