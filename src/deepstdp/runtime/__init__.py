"""Stage 0, the runtime every stage stands on: errors and atomic writes (`util`), the settings'
validation vocabulary (`rules`), thread pinning and its bounds (`threads`), devices and
precision (`devices`), torchrun worlds (`distributed`), compare's worker processes
(`workers`)."""
