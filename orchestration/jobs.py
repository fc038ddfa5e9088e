"""Jobs: evaluate one submission (a partition), refresh the leaderboard."""
from dagster import AssetSelection, define_asset_job

from orchestration.assets import evaluation, leaderboard, scores, submission_image

evaluate_submission = define_asset_job(
    "evaluate_submission", selection=AssetSelection.assets(submission_image, evaluation, scores),
    description="Build, run and score one submission. Operators rerun a submission by launching this "
                "job for its partition (or `arena admin rerun ID`).")

refresh_leaderboard = define_asset_job("refresh_leaderboard", selection=AssetSelection.assets(leaderboard))
