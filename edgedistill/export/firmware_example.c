/* Minimal firmware use of the generated student (docs/mcu-firmware.md). The mcu stage's QEMU test
   image compiles this file with the model and checks, on every window it runs, that the logits are
   the host build's and that the class is their argmax. */
#include <stdint.h>
#include "student.h"

/* One window of raw readings, channel-major as the model takes it: STUDENT_WINDOW samples of
   STUDENT_CHANNELS values (order: STUDENT_CHANNEL_NAMES) at STUDENT_SAMPLE_RATE_HZ. Static: the
   model's own working memory is its static arena; nothing is allocated. */
static float window[1][STUDENT_CHANNELS][STUDENT_WINDOW];
static float logits[1][STUDENT_OUTPUT_COUNT];

/* Sample t (0 .. STUDENT_WINDOW - 1) of every channel, in the units the readings were ingested in:
   the normalisation runs inside the model. */
void firmware_push_sample(int t, const float sample[STUDENT_CHANNELS]) {
    for (int c = 0; c < STUDENT_CHANNELS; ++c) window[0][c][t] = sample[c];
}

/* The window's class index: STUDENT_LABELS[i] names it. */
int firmware_classify(void) {
    student(window, logits);
    int best = 0;
    for (int i = 1; i < STUDENT_OUTPUT_COUNT; ++i)
        if (logits[0][i] > logits[0][best]) best = i;
    return best;
}

/* The last window's logits (STUDENT_OUTPUT_COUNT of them), e.g. for a confidence threshold. */
const float *firmware_logits(void) { return &logits[0][0]; }
