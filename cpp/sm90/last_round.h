// How the Hopper kernels plan a call's last, partial round of work (host code
// shared by both launches; plain C++, so that tests/last_round_test.cc checks
// it without a GPU).
//
// Work items (the forward's query tiles, the backward's key blocks) run one
// CTA per SM, so whole rounds of `sms` items leave a last one of rest =
// items % sms, through which the other SMs idle for an item's time. Cutting
// each of those items into `split` pieces ends the call after
// ceil(rest * split / sms) / split of an item instead; the pieces' partial
// results meet in caller scratch, where the last piece of an item to finish
// combines them. Work items [0, whole) are whole, then pieces: item
// whole + split * (tile - whole) + piece, up to `items`.
#pragma once

#include <cstdint>

#include "flash_sm90.h"  // LastRound

namespace jfa_sm90 {

constexpr int kMaxSplit = 4;
constexpr int kMaxCutTiles = 256;  // a last round's: fewer than the SMs

struct Cut {
  int whole, split, items;
};

inline Cut uncut(int tiles) { return Cut{tiles, 1, tiles}; }

// The split (at most max_split) that ends the last round soonest; none where
// the rounds are all whole.
inline Cut cut_last_round(int tiles, int sms, int max_split) {
  Cut c = uncut(tiles);
  if (sms <= 0 || sms > kMaxCutTiles) return c;
  const int rest = tiles % sms;
  if (rest == 0) return c;
  float best = 1.f;  // the last round, in tiles' time
  for (int k = 2; k <= max_split; ++k) {
    const float cost = float((rest * k + sms - 1) / sms) / k;
    if (cost < best - 0.01f) {
      best = cost;
      c.split = k;
    }
  }
  if (c.split == 1) return c;
  c.whole = tiles - rest;
  c.items = c.whole + rest * c.split;
  return c;
}

// Keeps a planned cut where the caller's scratch (`given` bytes, 0 without
// any) holds the `needed` bytes, else undoes it; says how the round will run.
inline LastRound fit_to_scratch(Cut& c, int64_t needed, int64_t given) {
  if (c.split == 1) return LastRound::uncut;
  if (needed <= given) return LastRound::cut;
  c = uncut(c.whole + (c.items - c.whole) / c.split);
  return LastRound::uncut_for_scratch;
}

}  // namespace jfa_sm90
