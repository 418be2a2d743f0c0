// Records what the "Talk to this agent" page hears and says: two channels
// (0: the microphone, 1: the agent) on the AudioContext's one clock, posted
// to the page in blocks of 4096 frames. Loaded with audioWorklet.addModule.
"use strict";
class SbRecorder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.size = 4096;
    this.left = new Float32Array(this.size);
    this.right = new Float32Array(this.size);
    this.fill = 0;
    this.started = -1;
  }
  process(inputs) {
    const input = inputs[0];
    const frames = input.length && input[0] ? input[0].length : 128;
    if (this.started < 0) this.started = currentFrame;
    for (let i = 0; i < frames; i++) {
      this.left[this.fill] = input[0] ? input[0][i] : 0;
      this.right[this.fill] = input[1] ? input[1][i] : 0;
      this.fill++;
      if (this.fill === this.size) {
        this.port.postMessage({ left: this.left, right: this.right, end: currentFrame + i + 1 },
          [this.left.buffer, this.right.buffer]);
        this.left = new Float32Array(this.size);
        this.right = new Float32Array(this.size);
        this.fill = 0;
      }
    }
    return true;
  }
}
registerProcessor("sb-recorder", SbRecorder);
