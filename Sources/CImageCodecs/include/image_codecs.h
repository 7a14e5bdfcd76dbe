// PNG and JPEG files to and from 8-bit RGB, over Debian's libpng and libjpeg-turbo.
// Every function returns 0 on success or -1 with a message in `error` (capacity `error_capacity`);
// a corrupt file never aborts the process.
#ifndef IMAGE_CODECS_H
#define IMAGE_CODECS_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
  int width;
  int height;
  uint8_t* pixels;  // width * height * 3 bytes, row-major RGB; free with ic_free
} ic_image;

// As Pillow's convert("RGB"): palettes expanded, grey replicated, 16-bit reduced to the high byte, alpha dropped.
int ic_read_png(const char* path, ic_image* out, char* error, int error_capacity);
int ic_read_jpeg(const char* path, ic_image* out, char* error, int error_capacity);
int ic_write_png(const char* path, const uint8_t* rgb, int width, int height, char* error, int error_capacity);
void ic_free(ic_image* image);
#endif
