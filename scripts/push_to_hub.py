"""Upload a model folder (weights, tokenizer, remote code, recipe) to the Hugging Face Hub with a
generated model card (metrics from the run's report, usage snippet, architecture, training recipe).

    python scripts/push_to_hub.py out/sft me/nanochat-d20                     # one commit to main
    python scripts/push_to_hub.py sft me/nanochat-d20 --private               # stage name in $HF_NANOGPT_BASE_DIR
    python scripts/push_to_hub.py out/sft me/nanochat-d20 --revision v2 --commit_message "SFT, 2 epochs"
    python scripts/push_to_hub.py out/sft me/nanochat-d20 --card_only         # print the card, upload nothing

Log in first (`hf auth login`) or set HF_TOKEN. HF_ENDPOINT points at another Hub (a mirror, a local
test server). Metrics come from `<run_dir>/report/` (default: the folder's parent, e.g. `out/`).
Afterwards anyone can run:

    AutoModelForCausalLM.from_pretrained("me/nanochat-d20", trust_remote_code=True)
"""

import argparse

from hf_nanogpt.cli import run_script


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model folder, or a stage name (base, mid, sft) in $HF_NANOGPT_BASE_DIR")
    parser.add_argument("repo_id", help="Hub repository, 'user/name' or 'org/name'")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--run_dir", default=None, help="run folder with report/ (default: the model folder's parent)")
    parser.add_argument("--revision", default=None, help="branch to upload to (created from main if missing)")
    parser.add_argument("--commit_message", default=None)
    parser.add_argument("--license", default="mit", help="license id in the card's metadata (default: mit)")
    parser.add_argument("--card_only", action="store_true", help="print the generated README.md and exit")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from hf_nanogpt.hub import build_model_card, push_model_folder, upload_files
    from hf_nanogpt.paths import resolve_stage

    folder = resolve_stage(args.model)
    if args.card_only:
        upload_files(folder)  # the same checks as a real push
        print(build_model_card(folder, args.repo_id, run_dir=args.run_dir, license=args.license,
                               revision=args.revision))
        return
    info = push_model_folder(folder, args.repo_id, private=args.private, run_dir=args.run_dir,
                             revision=args.revision, commit_message=args.commit_message, license=args.license)
    print(f"uploaded {folder} -> {info.commit_url}")
    print(f"load it with: AutoModelForCausalLM.from_pretrained({info.repo_url.repo_id!r}, trust_remote_code=True"
          + (f", revision={args.revision!r})" if args.revision else ")"))


if __name__ == "__main__":
    run_script(main)
