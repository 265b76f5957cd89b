"""TRL plugins: a multi-turn GRPO trainer for agentgym environments, and loss hooks."""
