from prep.launch import main

main()
