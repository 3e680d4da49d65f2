"""Meta-reinforcement learning: task families as Gymnasium environments, and the learners that
meta-learn a policy over them (`metazoo.rl.base` holds the shapes both sides share)."""
