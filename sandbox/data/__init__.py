"""An appspace's data as the supervisor handles it for the platform, by appspace id: its disk
use measured (`usage`, walked as root, hard links once, links never followed) and its files
removed, handed over after a restore or swapped in (`files`, every step O_NOFOLLOW)."""
