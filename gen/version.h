/* version.h: the pat version, part of every cache key and emitted banner. */
#ifndef PAT_VERSION_H
#define PAT_VERSION_H
#define PAT_VERSION "0.1.0"
#endif
