"""One-command training recipes: base -> SFT on expert demos -> RL, held-out success measured at each stage.

Each recipe is a script (``python recipes/NAME.py --out DIR``) built from the stages of :mod:`recipes.stages`;
a stage whose output already exists is skipped, so running the same command again resumes. ``--smoke`` runs
every stage for one step with a tiny random model (what ``tests/test_recipes.py`` does).

Example:
    >>> from recipes.stages import RecipeStage
    >>> RecipeStage("sft", "textworld").key
    'textworld/sft'
"""
