"""Training: the networks, the teacher and student loops, knowledge distillation and the teacher's
bank of views, checkpoints."""
