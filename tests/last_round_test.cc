// The Hopper kernels' last-round planning (cpp/sm90/last_round.h) on CPU:
// which calls cut their last round, into how many pieces, and what too little
// scratch does. On a GPU, tests/test_sm90.py checks the cut kernels themselves.

#include "last_round.h"

#include <cstdio>

namespace {

using jfa_sm90::Cut;
using jfa_sm90::LastRound;

int failures = 0;

void expect(bool ok, const char* what, int tiles, int sms) {
  if (!ok) {
    std::printf("FAIL %s (tiles %d, sms %d)\n", what, tiles, sms);
    ++failures;
  }
}

bool same(const Cut& a, const Cut& b) {
  return a.whole == b.whole && a.split == b.split && a.items == b.items;
}

// Cases worked by hand (132 SMs: H100 SXM and H200; 114: H100 PCIe; 78: H20).
void known_plans() {
  struct Case {
    int tiles, sms, max_split;
    Cut want;
  };
  const Case cases[] = {
      {64, 132, 4, {0, 2, 128}},        // 2 heads x 4096: halves end the round in half a tile
      {64, 114, 4, {0, 3, 192}},        // halves would still take a whole tile
      {64, 78, 4, {64, 1, 64}},         // no split ends the round sooner
      {2048, 132, 4, {1980, 3, 2184}},  // 16 heads x 16k: 68 tiles in thirds
      {2048, 132, 1, {2048, 1, 2048}},  // keys too short to cut
      {4224, 132, 4, {4224, 1, 4224}},  // 33 heads x 16k: 32 whole rounds
      {264, 132, 4, {264, 1, 264}},     // two whole rounds
      {0, 132, 4, {0, 1, 0}},
      {64, 300, 4, {64, 1, 64}},  // more SMs than the arrival counters cover
      {64, 0, 4, {64, 1, 64}},
  };
  for (const Case& c : cases)
    expect(same(jfa_sm90::cut_last_round(c.tiles, c.sms, c.max_split), c.want), "known plan", c.tiles,
           c.sms);
}

// Every plan: uncut, or whole rounds and then the last round's tiles in
// `split` pieces that end it at least 1% of a tile sooner.
void every_plan() {
  for (int sms : {78, 114, 132, 144, 256}) {
    for (int tiles = 0; tiles <= 3 * sms + 7; ++tiles) {
      const Cut c = jfa_sm90::cut_last_round(tiles, sms, jfa_sm90::kMaxSplit);
      if (c.split == 1) {
        expect(c.whole == tiles && c.items == tiles, "uncut plan", tiles, sms);
        continue;
      }
      const int rest = tiles - c.whole;
      expect(c.split <= jfa_sm90::kMaxSplit, "split bound", tiles, sms);
      expect(c.whole % sms == 0 && rest > 0 && rest < sms, "whole rounds first", tiles, sms);
      expect(c.items == c.whole + rest * c.split, "item count", tiles, sms);
      const float last = float((rest * c.split + sms - 1) / sms) / c.split;
      expect(last < 0.99f, "a shorter last round", tiles, sms);
    }
  }
}

void scratch() {
  Cut c = jfa_sm90::cut_last_round(64, 132, 4);
  expect(jfa_sm90::fit_to_scratch(c, 1000, 1000) == LastRound::cut && c.split == 2, "enough scratch", 64,
         132);
  expect(jfa_sm90::fit_to_scratch(c, 1000, 999) == LastRound::uncut_for_scratch, "too little scratch",
         64, 132);
  expect(same(c, jfa_sm90::uncut(64)), "undone cut", 64, 132);
  Cut whole = jfa_sm90::uncut(264);
  expect(jfa_sm90::fit_to_scratch(whole, 0, 0) == LastRound::uncut && same(whole, jfa_sm90::uncut(264)),
         "nothing to cut", 264, 132);
}

}  // namespace

int main() {
  known_plans();
  every_plan();
  scratch();
  if (failures) return 1;
  std::printf("last_round_test: all passed\n");
  return 0;
}
